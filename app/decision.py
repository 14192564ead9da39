"""Judging qualifications against a dataset's requirements: the access decision.

``decide()`` is pure: it takes the policy, the qualifications read from ORCID and the
current time, and returns a ``Decision`` that keeps every verdict, so the researcher
page, ``gatekeeper explain`` and the audit log all show the same reasons.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.errors import GatekeeperError
from app.policy import SELF_ASSERTED, SELF_ISSUED, Dataset, Policy, QualificationRule
from app.qualifications import Qualification, UnreadableItem


@dataclass(frozen=True, slots=True)
class Success:
    def __bool__(self):
        return True


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed check: a stable ``reason`` code and a sentence for people."""

    reason: str
    message: str

    def __bool__(self):
        return False

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class ReadError:
    """Why the record could not be read. Unlike ``Failure`` it is truthy: "there is one"."""

    reason: str
    message: str

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message}


# Who added an item this service wrote itself, as a verdict says it (``added_by``).
THIS_SERVICE = "this service"


@dataclass(frozen=True, slots=True)
class CandidateVerdict:
    """How one ORCID item fared against one qualification rule."""

    put_code: int | None  # None: an unreadable summary that had none
    qualification: str  # the rule's name in the policy
    title: str | None
    provider: str | None
    added_by: str
    valid_from: dt.date | None  # first day it counts; None: since always
    valid_until: dt.date | None  # last day it counts (inclusive); None: no expiry
    failures: tuple[Failure, ...] = ()
    # Written by this service's own client, on no one else's behalf (whatever its name).
    by_this_service: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "put_code": self.put_code,
            "qualification": self.qualification,
            "title": self.title,
            "provider": self.provider,
            "added_by": self.added_by,
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "ok": self.ok,
            "reasons": [f.to_dict() for f in self.failures],
            "by_this_service": self.by_this_service,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CandidateVerdict:
        return cls(
            put_code=data["put_code"],
            qualification=data["qualification"],
            title=data.get("title"),
            provider=data.get("provider"),
            added_by=data.get("added_by", ""),
            valid_from=_date(data.get("valid_from")),
            valid_until=_date(data.get("valid_until")),
            failures=tuple(Failure(**f) for f in data.get("reasons", [])),
            # Logged before it had its own field: its words said so.
            by_this_service=data.get("by_this_service", data.get("added_by") == THIS_SERVICE),
        )


@dataclass(frozen=True, slots=True)
class RequirementResult:
    options: tuple[str, ...]  # one qualification name, or the names of an any_of
    met: bool
    put_code: int | None = None  # the item that satisfied it
    qualification: str | None = None  # which option it satisfied
    valid_until: dt.date | None = None
    candidates: tuple[CandidateVerdict, ...] = ()

    @property
    def label(self) -> str:
        return self.options[0] if len(self.options) == 1 else "any of: " + ", ".join(self.options)

    def to_dict(self) -> dict:
        return {
            "requirement": self.label,
            "options": list(self.options),
            "met": self.met,
            "put_code": self.put_code,
            "qualification": self.qualification,
            "valid_until": _iso(self.valid_until),
            "candidates": [c.to_dict() for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: dict) -> RequirementResult:
        return cls(
            options=tuple(data["options"]),
            met=data["met"],
            put_code=data.get("put_code"),
            qualification=data.get("qualification"),
            valid_until=_date(data.get("valid_until")),
            candidates=tuple(CandidateVerdict.from_dict(c) for c in data.get("candidates", [])),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    orcid: str
    dataset: str
    allowed: bool
    requirements: tuple[RequirementResult, ...]
    policy_version: str
    decided_at: dt.datetime
    valid_until: dt.datetime | None = None  # when to judge again; None: not before cache_ttl
    error: ReadError | None = None  # the record could not be read: a refusal

    def to_dict(self) -> dict:
        return {
            "orcid": self.orcid,
            "dataset": self.dataset,
            "allowed": self.allowed,
            "requirements": [r.to_dict() for r in self.requirements],
            "error": self.error.to_dict() if self.error is not None else None,
            "valid_until": _iso(self.valid_until),
            "policy_version": self.policy_version,
            "decided_at": _iso(self.decided_at),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Decision:
        return cls(
            orcid=data["orcid"],
            dataset=data["dataset"],
            allowed=bool(data["allowed"]),
            requirements=tuple(RequirementResult.from_dict(r) for r in data["requirements"]),
            policy_version=data["policy_version"],
            decided_at=dt.datetime.fromisoformat(data["decided_at"]),
            valid_until=_datetime(data.get("valid_until")),
            error=ReadError(**data["error"]) if data.get("error") else None,
        )


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _date(value) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


def _datetime(value) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _end_of(day: dt.date) -> dt.datetime:
    """The instant a day stops counting: midnight UTC after it (end dates are inclusive)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


# --- judging --------------------------------------------------------------------------


class _Judge:
    """Checks items against rules for one researcher, one policy, one moment."""

    def __init__(self, policy: Policy, orcid: str, today: dt.date, own_client_id: str | None):
        self.policy, self.orcid, self.today = policy, orcid, today
        self.own_client_id = own_client_id

    def writer(self, item: Qualification) -> str | None:
        """The client that wrote the item, or another person's iD; None: the researcher.

        Legacy clients have iD-shaped IDs and may appear under ``source-orcid`` as well as
        ``source-client-id``, so an iD there that is not the researcher's is matched
        against trusted client IDs too.
        """
        source = item.source
        if source.source_client_id is not None:
            return source.source_client_id
        return source.source_orcid if source.source_orcid != self.orcid else None

    def origin(self, item: Qualification) -> str | None:
        """On whose behalf the writer wrote (ORCID's assertion origin), if not the writer's."""
        source = item.source
        return source.assertion_origin_client_id or source.assertion_origin_orcid

    def added_by(self, item: Qualification) -> str:
        """Who added the item, in words; trusted names come from the policy, never ORCID."""
        source = item.source
        if source.unknown:
            return "an unknown source"
        if self.is_self_asserted(item):
            return "yourself"
        writer = self.writer(item)
        words = (
            "yourself"
            if writer is None
            else self.describe(
                writer, source.source_name, client=source.source_client_id is not None
            )
        )
        origin = self.origin(item)
        if origin is None or origin == writer:
            return words
        # Written on behalf of another (ORCID's member portal, or a delegate): name both.
        behalf = self.describe(
            origin,
            source.assertion_origin_name,
            client=source.assertion_origin_client_id is not None,
        )
        return f"{words} on behalf of {behalf}"

    def describe(self, who: str, label: str | None, *, client: bool) -> str:
        if who == self.own_client_id:
            return THIS_SERVICE
        name = self.trusted_name(who)
        if name:
            return name
        if not client:
            return f"ORCID user {who}"
        label = (label or "").strip()
        return f'"{label}" (ORCID client {who})' if label else f"ORCID client {who}"

    def trusted_name(self, client: str | None) -> str | None:
        for trusted in self.policy.sources.values():
            if client in trusted.client_ids:
                return trusted.name
        return None

    def is_self_asserted(self, item: Qualification) -> bool:
        source = item.source
        if source.unknown:
            return False
        if source.source_orcid == self.orcid and source.assertion_origin_client_id is None:
            return source.assertion_origin_orcid in (None, self.orcid)
        # A search-and-link import: a client wrote it, but the researcher chose what.
        return source.assertion_origin_orcid == self.orcid

    def by_this_service(self, item: Qualification) -> bool:
        """Whether this service's own client wrote the item, on no one's behalf."""
        if item.source.unknown or self.is_self_asserted(item) or not self.own_client_id:
            return False
        return self.writer(item) == self.own_client_id and self.origin(item) is None

    def source_check(self, rule: QualificationRule, item: Qualification) -> Success | Failure:
        """Whether the item's source may add this qualification.

        ``self-asserted`` takes the item from any source ORCID identifies: the researcher's
        own word is the weakest evidence, and an item a member client (or a delegate)
        added with the researcher's permission is no weaker. An unknown source still
        counts for nobody.
        """
        accepted = set(rule.sources)
        if item.source.unknown:
            return Failure("wrong_source", unknown_source_message(self.policy, rule))
        if SELF_ASSERTED in accepted:
            return Success()
        if not self.is_self_asserted(item):
            writer, origin = self.writer(item), self.origin(item)
            if SELF_ISSUED in accepted and self.by_this_service(item):
                # Ours, but is it this qualification's, this researcher's, for the terms
                # as they stand? Titles alone would let one rule's item open another.
                if rule.issue is None or rule.issue.wrote(item, self.orcid):
                    return Success()
                return Failure("wrong_source", not_issued_as_message(rule))
            for key in accepted - {SELF_ISSUED}:
                ids = self.policy.sources[key].client_ids
                # Written by one client on behalf of another (ORCID's member portal):
                # both must be trusted, as one source.
                if writer in ids and (origin is None or origin in ids):
                    return Success()
        return Failure("wrong_source", wrong_source_message(self.policy, rule, self.added_by(item)))

    def unreadable(self, rule: QualificationRule, item: UnreadableItem) -> CandidateVerdict:
        return CandidateVerdict(
            put_code=item.put_code,
            qualification=rule.key,
            title=item.title,
            provider=None,
            added_by="an unknown source",
            valid_from=None,
            valid_until=None,
            failures=(
                Failure(
                    "unreadable_item",
                    "ORCID returned this item in a form we could not read, so it cannot count",
                ),
            ),
        )

    def verdict(self, rule: QualificationRule, item: Qualification) -> CandidateVerdict:
        failures: list[Failure] = []
        org = item.organization
        if (rule.title or rule.title_pattern) and not rule.matches_external_id(item):
            ext = rule.external_id
            failures.append(
                Failure(
                    "external_id_mismatch",
                    f"it does not carry the persistent ID {ext.type} {ext.value}",
                )
            )
        if not rule.matches_organization(item):
            if org is None or org.disambiguated_id is None or org.disambiguation_source is None:
                provider = f"from {org.name}" if org and org.name else ""
                message = (
                    f"it names no provider organisation ID {provider}; "
                    f"this dataset needs one from {rule.organization}"
                ).replace("  ", " ")
            else:
                message = (
                    f"it was provided by {org.name or 'another organisation'} "
                    f"({org.disambiguation_source} {org.disambiguated_id}); "
                    f"this dataset needs {rule.organization}"
                )
            failures.append(Failure("organization_mismatch", message))
        if not rule.matches_url(item):
            where = f"its URL {item.url}" if item.url else "it has no URL, so it"
            failures.append(Failure("url_mismatch", f"{where} is not under {rule.url_prefix}"))
        source = self.source_check(rule, item)
        if not source:
            failures.append(source)
        date_failures, valid_until = self.date_checks(rule, item)
        failures.extend(date_failures)
        return CandidateVerdict(
            put_code=item.put_code,
            qualification=rule.key,
            title=item.title,
            provider=org.name if org else None,
            added_by=self.added_by(item),
            by_this_service=self.by_this_service(item),
            valid_from=_first_day_counting(rule, item),
            valid_until=valid_until,
            failures=tuple(failures),
        )

    def date_checks(self, rule, item) -> tuple[list[Failure], dt.date | None]:
        """Date failures, and the last day the item counts (None: no end).

        ORCID's dates on a qualification mean different things to different providers:
        a validity window (``end_date: expiry``, the default: no end date, no expiry), or
        the time the training was undertaken (``end_date: completion``: ORCID's own form
        says "leave blank if current", so no end date, or one still ahead, means the
        training is not finished and it does not count).
        """
        failures = []
        today = self.today
        start = item.start.first_day() if item.start else None
        end = item.end.last_day() if item.end else None
        last = None
        if start is not None and today < start:
            failures.append(Failure("not_yet_valid", f"it is not valid until {start.isoformat()}"))
        if rule.end_date == "completion":
            if end is None:
                failures.append(
                    Failure("not_completed", "it has no end date, so it may still be in progress")
                )
            elif today <= end:
                failures.append(
                    Failure("not_completed", f"it is in progress until {end.isoformat()}")
                )
        else:
            last = end
            if end is not None and today > end:
                failures.append(Failure("expired", f"it expired on {end.isoformat()}"))
        if rule.max_age_days is not None:
            # Age counts from completion when the end date means completion. A partial date
            # counts from its first day, the oldest the item can be (an end of "2024" may
            # mean 1 January), as a partial start date does.
            completed = item.end.first_day() if item.end else None
            basis = completed if rule.end_date == "completion" else start
            basis = basis or (item.created.date() if item.created else None)
            if basis is None:
                failures.append(
                    Failure(
                        "age_unknown", "it has no start or creation date, so its age is unknown"
                    )
                )
            else:
                lapses = basis + dt.timedelta(days=rule.max_age_days)
                if today > lapses:
                    failures.append(
                        Failure(
                            "too_old",
                            f"it is older than {rule.max_age_days} days "
                            f"(from {basis.isoformat()}; it lapsed on {lapses.isoformat()})",
                        )
                    )
                last = lapses if last is None else min(last, lapses)
        return failures, last


def who_may_add(policy: Policy, rule: QualificationRule, yourself: str = "yourself") -> str:
    """The sources a qualification is accepted from, in words (``yourself``: the researcher)."""
    if SELF_ASSERTED in rule.sources:
        return f"anyone ORCID names as its source, {yourself} included"
    return policy.who_may_add(rule)


def wrong_source_message(
    policy: Policy, rule: QualificationRule, added_by: str, yourself: str = "yourself"
) -> str:
    """Why an item from a source the rule does not trust does not count."""
    return f"added by {added_by}; this dataset needs it from {who_may_add(policy, rule, yourself)}"


def not_issued_as_message(rule: QualificationRule) -> str:
    """Why an item this service wrote does not count for ``rule``: it does not carry the
    identifier the rule writes for this researcher now."""
    if rule.issue is not None and rule.issue.accept_terms is not None:
        return (
            "added by this service, but for other terms (an earlier version, or another "
            "agreement): it counts once the current terms are accepted"
        )
    return "added by this service, but as another qualification or for another record"


def unknown_source_message(policy: Policy, rule: QualificationRule, yourself: str = "yourself"):
    """Why an item whose source ORCID left unknown does not count."""
    return (
        "ORCID did not say clearly who added it, so it counts for nobody; "
        f"this dataset needs it from {who_may_add(policy, rule, yourself)}"
    )


def _first_day_counting(rule: QualificationRule, item: Qualification) -> dt.date | None:
    """The first day an item counts: its start, or the day after it completes."""
    start = item.start.first_day() if item.start else None
    if rule.end_date == "completion" and item.end is not None:
        after = item.end.last_day() + dt.timedelta(days=1)
        return after if start is None else max(start, after)
    return start


def decide(
    policy: Policy,
    dataset: Dataset,
    qualifications: list[Qualification | UnreadableItem],
    *,
    orcid: str,
    now: dt.datetime,
    own_client_id: str | None = None,
) -> Decision:
    """Judge a researcher's qualifications against a dataset's requirements."""
    judge = _Judge(policy, orcid, now.date(), own_client_id)
    results = []
    for requirement in dataset.require:
        verdicts = [
            judge.unreadable(policy.qualifications[key], item)
            if isinstance(item, UnreadableItem)
            else judge.verdict(policy.qualifications[key], item)
            for key in requirement.options
            for item in qualifications
            if policy.qualifications[key].is_candidate(item)
        ]
        passing = [v for v in verdicts if v.ok]
        if passing:
            # The item that holds longest keeps the decision alive longest.
            best = max(passing, key=lambda v: v.valid_until or dt.date.max)
            results.append(
                RequirementResult(
                    requirement.options,
                    True,
                    best.put_code,
                    best.qualification,
                    best.valid_until,
                    tuple(verdicts),
                )
            )
        else:
            results.append(
                RequirementResult(requirement.options, False, candidates=tuple(verdicts))
            )
    allowed = bool(results) and all(r.met for r in results)
    return Decision(
        orcid=orcid,
        dataset=dataset.key,
        allowed=allowed,
        requirements=tuple(results),
        policy_version=policy.version,
        decided_at=now,
        valid_until=_valid_until(results, allowed, dataset, now),
    )


def _valid_until(results, allowed, dataset, now) -> dt.datetime | None:
    """When the decision may change: an item used expires, or a refused one starts."""
    ends: list[dt.datetime] = []
    if allowed:
        ends = [_end_of(r.valid_until) for r in results if r.valid_until is not None]
    else:
        for result in results:
            for verdict in result.candidates:
                # Only waiting stands between this item and counting: judge again then.
                reasons = {f.reason for f in verdict.failures}
                waiting = reasons and reasons <= {"not_yet_valid", "not_completed"}
                # A day still ahead: training with no end date has no day to wait for.
                if waiting and verdict.valid_from is not None and verdict.valid_from > now.date():
                    ends.append(_end_of(verdict.valid_from - dt.timedelta(days=1)))
    if dataset.cache_ttl is not None:
        ends.append(now + dt.timedelta(seconds=dataset.cache_ttl))
    return min(ends) if ends else None


def refuse_unreadable(
    policy: Policy, dataset: Dataset, *, orcid: str, error: GatekeeperError, now: dt.datetime
) -> Decision:
    """The decision when the record could not be read: a refusal that says why."""
    return Decision(
        orcid=orcid,
        dataset=dataset.key,
        allowed=False,
        requirements=tuple(RequirementResult(r.options, False) for r in dataset.require),
        policy_version=policy.version,
        decided_at=now,
        valid_until=None,
        error=ReadError(error.reason, error.message),
    )
