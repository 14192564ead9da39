"""Impact preview: replay logged decisions against a candidate policy, without ORCID.

Pure: each logged decision keeps the qualifications it was judged on (and the record's
other items as the summary showed them), so ``decide()`` can judge them again under the
policy in force and under the candidate, at the same moment. Judging both at the same
moment means a qualification that expired since the decision changes nothing here: only
the policy differs between the two sides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.decision import Decision, RequirementResult, decide
from app.policy import Policy

if TYPE_CHECKING:  # the log's adapter imports Redis; the replay needs only its entries
    from app.decision_log import LogEntry


@dataclass(frozen=True, slots=True)
class RequirementChange:
    """A requirement whose result differs between the two policies, in words."""

    requirement: str  # its label under the policy where it decided ("any of: gcp, hsr")
    before: str  # met, not met, or absent (the policy in force has no such requirement)
    after: str
    detail: str  # why, for a person: the item that meets it, or why each candidate fails
    reasons: tuple[str, ...] = ()  # the reason codes when it is not met after

    def to_dict(self) -> dict:
        return {
            "requirement": self.requirement,
            "before": self.before,
            "after": self.after,
            "detail": self.detail,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One researcher and dataset whose outcome the candidate policy would change."""

    orcid: str
    dataset: str
    before: str | None  # allow or deny; None: the dataset is not in the policy in force
    after: str | None  # allow or deny; None: the candidate policy has no such dataset
    requirements: tuple[RequirementChange, ...]
    decided_at: dt.datetime  # when the replayed decision was made from ORCID
    policy_version: str  # the policy it was made under

    def to_dict(self) -> dict:
        return {
            "orcid": self.orcid,
            "dataset": self.dataset,
            "before": self.before,
            "after": self.after,
            "changed_by": [r.to_dict() for r in self.requirements],
            "decided_at": self.decided_at.isoformat(),
            "policy_version": self.policy_version,
        }


@dataclass(frozen=True, slots=True)
class Impact:
    replayed: int  # researcher and dataset pairs judged again
    changes: tuple[Change, ...]
    unreplayable: tuple[tuple[str, str], ...] = ()  # (iD, dataset): the record never read

    @property
    def lost(self) -> int:
        return sum(1 for c in self.changes if c.before == "allow")

    @property
    def gained(self) -> int:
        return sum(1 for c in self.changes if c.after == "allow")


def replay(policy: Policy, entry: LogEntry, now: dt.datetime) -> Decision | None:
    """The logged decision judged again under ``policy`` at ``now``; None: no such dataset.

    :raises ValueError: for an entry read back without its items (``items=False``).
    """
    if entry.partial:
        raise ValueError("a decision read back without its items cannot be replayed")
    target = policy.datasets.get(entry.dataset)
    if target is None:
        return None
    items = [*entry.qualifications, *entry.summaries]
    return decide(
        policy, target, items, orcid=entry.orcid, now=now, own_client_id=entry.own_client_id
    )


def preview(
    entries: Iterable[LogEntry], current: Policy, candidate: Policy, now: dt.datetime
) -> Impact:
    """Replay the newest decision of each researcher and dataset under both policies.

    ``entries`` come newest first (as ``DecisionLog.entries`` gives them). A pair whose
    newest decision could not read the record is replayed from its newest one that
    could; a pair with none is reported as unreplayable.
    """
    newest: dict[tuple[str, str], LogEntry] = {}
    errors: dict[tuple[str, str], None] = {}
    for entry in entries:
        key = (entry.orcid, entry.dataset)
        if key in newest:
            continue
        if entry.is_replayable:
            newest[key] = entry
            errors.pop(key, None)
        else:
            errors[key] = None
    changes = []
    for entry in newest.values():
        before, after = replay(current, entry, now), replay(candidate, entry, now)
        # A dataset that is not in a policy admits nobody: only a change of access counts.
        if _allows(before) == _allows(after):
            continue
        changes.append(
            Change(
                orcid=entry.orcid,
                dataset=entry.dataset,
                before=_outcome(before),
                after=_outcome(after),
                requirements=_requirement_changes(before, after, entry),
                decided_at=entry.decided_at,
                policy_version=entry.policy_version,
            )
        )
    changes.sort(key=lambda c: (c.dataset, c.orcid))
    return Impact(len(newest), tuple(changes), tuple(sorted(errors)))


def _allows(decision: Decision | None) -> bool:
    return decision is not None and decision.allowed


def _outcome(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return "allow" if decision.allowed else "deny"


def _requirement_changes(
    before: Decision | None, after: Decision | None, entry: LogEntry
) -> tuple[RequirementChange, ...]:
    """The requirements that turned the outcome: unmet now, or no longer unmet."""
    if before is None or after is None:
        return ()
    summarised = {q.put_code for q in entry.summaries}
    pairs = _pair(before.requirements, after.requirements)
    found = []
    if before.allowed:  # lost access: what is no longer met, or newly required
        for old, new in pairs:
            if new is not None and not new.met and (old is None or old.met):
                found.append(_unmet(new, "absent" if old is None else "met", summarised))
    else:  # gained access: what was unmet and is now met, or no longer required
        for old, new in pairs:
            if old is None or old.met:
                continue
            if new is None:
                found.append(
                    RequirementChange(old.label, "not met", "absent", "no longer required")
                )
            elif new.met:
                found.append(_met(new, summarised))
    return tuple(found)


def _pair(old_results, new_results):
    """Match each requirement to its counterpart: the same options, else a shared one."""
    unused = list(old_results)
    pairs = []
    for new in new_results:
        match = next((o for o in unused if o.options == new.options), None)
        match = match or next((o for o in unused if set(o.options) & set(new.options)), None)
        if match is not None:
            unused.remove(match)
        pairs.append((match, new))
    pairs.extend((old, None) for old in unused)
    return pairs


def _described(put_code, title, summarised) -> str:
    words = f'put-code {put_code} "{title}"' if title else f"put-code {put_code}"
    if put_code in summarised:
        words += " (judged on the summary: it was never read in full)"
    return words


def _met(result: RequirementResult, summarised) -> RequirementChange:
    title = next((c.title for c in result.candidates if c.put_code == result.put_code), None)
    return RequirementChange(
        result.label,
        "not met",
        "met",
        f"now met by {_described(result.put_code, title, summarised)}",
    )


def _unmet(result: RequirementResult, before: str, summarised) -> RequirementChange:
    if not result.candidates:
        return RequirementChange(
            result.label, before, "not met", "no item on the record could count", ("missing",)
        )
    parts = [
        f"{_described(c.put_code, c.title, summarised)}: "
        + "; ".join(f.message for f in c.failures)
        for c in result.candidates
    ]
    reasons = sorted({f.reason for c in result.candidates for f in c.failures})
    return RequirementChange(result.label, before, "not met", " | ".join(parts), tuple(reasons))
