"""A decision in plain words: the researcher pages and ``gatekeeper explain`` share them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.decision import Decision, ReadError, RequirementResult
from app.policy import SELF_ASSERTED, SELF_ISSUED, Dataset, Policy

ORCID_SUPPORT = "https://support.orcid.org/"
_ORCID_ID = re.compile(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]")


def describe_requirement(policy: Policy, result: RequirementResult) -> str:
    """Name a requirement the way a researcher would: by the qualifications' titles."""
    labels = []
    for key in result.options:
        rule = policy.qualifications.get(key)
        labels.append(f'"{rule.label}"' if rule else key)
    return labels[0] if len(labels) == 1 else "one of " + ", ".join(labels)


def met_sentence(result: RequirementResult, *, put_code: bool = True) -> str:
    """Which item met a requirement; the put-code only for stewards (the CLI), not pages."""
    used = next(c for c in result.candidates if c.put_code == result.put_code and c.ok)
    provider = f" from {used.provider}" if used.provider else ""
    code = f" (put-code {used.put_code})" if put_code else ""
    until = f", valid until {used.valid_until.isoformat()}" if used.valid_until else ""
    return f'met by "{used.title}"{provider}{code}, added by {used.added_by}{until}'


@dataclass(frozen=True, slots=True)
class Need:
    """One qualification a dataset asks for, as a researcher reads it before signing in."""

    label: str  # the name the policy gives it, quoted
    added_by: str  # who may add it to the ORCID record, in words
    max_age_days: int | None = None


def dataset_needs(policy: Policy, dataset: Dataset) -> list[tuple[Need, ...]]:
    """Every requirement of a dataset (one Need, or the options of an any_of)."""
    return [
        tuple(_need(policy, key) for key in requirement.options) for requirement in dataset.require
    ]


def _need(policy: Policy, key: str) -> Need:
    rule = policy.qualifications[key]
    names = []
    for source in rule.sources:
        if source == SELF_ASSERTED:
            names.append("you")
        elif source == SELF_ISSUED:
            names.append("this service")
        elif source in policy.sources:
            names.append(policy.sources[source].name)
    return Need(f'"{rule.label}"', " or ".join(names) or "nobody yet", rule.max_age_days)


@dataclass(frozen=True, slots=True)
class ReadErrorAdvice:
    """What to do when the record could not be read, and whom the page should name."""

    text: str
    orcid_support: bool = False  # link to ORCID support
    steward: bool = False  # give the data steward's contact
    sign_in_again: bool = False
    merged: bool = False  # sign out, then sign in with the primary iD
    primary_orcid: str | None = None  # that iD, when ORCID named it
    headline: str | None = None  # instead of the error's message, on pages


def read_error_advice(
    error: ReadError, orcid_base_url: str = "https://orcid.org"
) -> ReadErrorAdvice:
    """Advice a researcher can follow for each reason a record could not be read.

    Never asks them to change their ORCID visibility settings: ORCID's integration
    requirements forbid it. What we could not read, we say so, and name the steward.
    """
    reason = error.reason
    if reason == "record_deprecated":
        found = _ORCID_ID.findall(error.message)
        primary = found[-1] if found else None
        who = f"{orcid_base_url.rstrip('/')}/{primary}" if primary else "your primary ORCID iD"
        return ReadErrorAdvice(
            f"sign out and sign in with {who}, the record this one was merged into.",
            merged=True,
            primary_orcid=primary,
            # The error's message names the bare iD; pages show it as ORCID asks, below.
            headline="This ORCID record has been merged into another one.",
        )
    if reason == "record_locked":
        return ReadErrorAdvice(
            "contact ORCID support, who can tell you why your record is locked and how to "
            "unlock it; then check again.",
            orcid_support=True,
        )
    if reason == "record_deactivated":
        return ReadErrorAdvice(
            "contact ORCID support to reactivate your ORCID record; then check again.",
            orcid_support=True,
        )
    if reason == "record_unclaimed":
        return ReadErrorAdvice(
            "claim your ORCID record from the email ORCID sent when it was created (or "
            "contact ORCID support if you cannot find it); then check again.",
            orcid_support=True,
        )
    if reason == "record_not_found":
        return ReadErrorAdvice(
            "sign out and sign in with the ORCID iD you use; if this is it, contact ORCID support.",
            orcid_support=True,
        )
    if reason == "token_invalid":
        return ReadErrorAdvice(
            "sign in with ORCID again and choose Authorize, so that we may read your record.",
            sign_in_again=True,
        )
    if reason == "orcid_unavailable":
        return ReadErrorAdvice("wait a few minutes, then check again.")
    if reason == "access_forbidden":
        return ReadErrorAdvice(
            "we could not read part of your ORCID record, so nothing in it can count here. "
            "Contact the data steward, who can look into it with you.",
            steward=True,
        )
    if reason == "too_many_candidates":
        return ReadErrorAdvice(
            "remove the duplicate entries from your ORCID record, then check again; or "
            "contact the data steward.",
            steward=True,
        )
    return ReadErrorAdvice(
        "check again in a few minutes. If it keeps happening, contact ORCID support and "
        "tell the data steward.",
        orcid_support=True,
        steward=True,
    )


def next_step(policy: Policy, result: RequirementResult) -> str:
    """What a researcher can do about an unmet requirement (any option of an any_of)."""
    return " Or: ".join(_advice(policy, key, result) for key in result.options)


def _advice(policy: Policy, key: str, result: RequirementResult) -> str:
    rule = policy.qualifications[key]
    label = f'"{rule.label}"'
    candidates = [c for c in result.candidates if c.qualification == key]
    reasons = {f.reason for c in candidates for f in c.failures}
    if reasons == {"unreadable_item"}:
        return (
            f"ORCID sent us an entry that may be {label} in a form we could not read; "
            "please tell the data steward, who can look into it."
        )
    if reasons == {"not_yet_valid"}:
        return f"wait until your {label} starts, then check again."
    if reasons & {"expired", "too_old"}:
        return f"renew {label}, then {_ways_to_add(policy, rule, 'the new one')}."
    if not candidates:
        return f"complete {label}, then {_ways_to_add(policy, rule, 'it')}."
    if "wrong_source" in reasons:
        return f"{_ways_to_add(policy, rule, label)}."
    return f"{_ways_to_add(policy, rule, f'a corrected {label}')}."


def _ways_to_add(policy: Policy, rule, what: str) -> str:
    """Who can add a qualification to the record: its providers, or the researcher.

    Never "ask this site" (we add nothing unless we issue the qualification) nor "ask
    yourself": a self-asserted qualification is one the researcher adds themselves.
    """
    ways = []
    providers = [policy.sources[k].name for k in rule.sources if k in policy.sources]
    if providers:
        ways.append(f"ask {' or '.join(providers)} to add {what} to your ORCID record")
    if SELF_ASSERTED in rule.sources:
        ways.append(f"add {what} to your ORCID record yourself")
    if not ways:
        ways.append(f"contact the data steward, who can add {what} for you")
    return " or ".join(ways)


def explain_lines(policy: Policy, decision: Decision) -> list[str]:
    """The whole decision as lines of text."""
    dataset = policy.datasets.get(decision.dataset)
    title = dataset.title if dataset else decision.dataset
    verdict = "may open" if decision.allowed else "may not open"
    lines = [f'{decision.orcid} {verdict} "{title}" ({decision.dataset}).']
    if decision.error is not None:
        lines.append(f"We could not check the ORCID record: {decision.error.message}")
        lines.append(f"  (reason: {decision.error.reason})")
        advice = read_error_advice(decision.error)
        support = f" ORCID support: {ORCID_SUPPORT}" if advice.orcid_support else ""
        lines.append(f"  What to do: {advice.text}{support}")
    else:
        for result in decision.requirements:
            name = describe_requirement(policy, result)
            if result.met:
                lines.append(f"  [met]     {name}: {met_sentence(result)}.")
                continue
            lines.append(f"  [missing] {name}:")
            if not result.candidates:
                lines.append("      no matching qualification on the ORCID record.")
            for candidate in result.candidates:
                why = "; ".join(f.message for f in candidate.failures)
                put_code = f"put-code {candidate.put_code}" if candidate.put_code else "an item"
                item = f'{put_code} "{candidate.title or "untitled"}"'
                lines.append(f"      {item} does not count: {why}.")
            lines.append(f"      What to do: {next_step(policy, result)}")
    holds = decision.valid_until.isoformat() if decision.valid_until else "no set end"
    lines.append(
        f"Decided {decision.decided_at.isoformat()} under policy {decision.policy_version}; "
        f"holds until {holds}."
    )
    return lines
