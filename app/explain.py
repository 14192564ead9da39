"""A decision in plain words: the researcher pages and ``gatekeeper explain`` share them."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from app.decision import (
    CandidateVerdict,
    Decision,
    ReadError,
    RequirementResult,
    unknown_source_message,
    wrong_source_message,
)
from app.policy import SELF_ASSERTED, SELF_ISSUED, Dataset, Policy

ORCID_SUPPORT = "https://support.orcid.org/"
_ORCID_ID = re.compile(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]")


@dataclass(frozen=True, slots=True)
class Voice:
    """Whom the words address: the researcher (web pages) or a steward (the command line)."""

    yourself: str  # who added an item the researcher added
    your: str
    themselves: str
    what_to_do: str


# Pages speak to the researcher; the command line, read by a steward, of the researcher.
RESEARCHER = Voice("yourself", "your", "yourself", "What to do")
STEWARD = Voice("the researcher", "their", "themselves", "What the researcher can do")
AUDIENCES = {"researcher": RESEARCHER, "steward": STEWARD}


def when(moment: dt.datetime) -> str:
    """A time as a person reads it: to the second, in UTC (no microseconds, no offset)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_requirement(policy: Policy, result: RequirementResult) -> str:
    """Name a requirement the way a researcher would: by the qualifications' titles."""
    labels = []
    for key in result.options:
        rule = policy.qualifications.get(key)
        labels.append(f'"{rule.label}"' if rule else key)
    return labels[0] if len(labels) == 1 else "one of " + ", ".join(labels)


def met_sentence(
    result: RequirementResult, *, put_code: bool = True, audience: str = "researcher"
) -> str:
    """Which item met a requirement; the put-code only for stewards (the CLI), not pages."""
    used = next(c for c in result.candidates if c.put_code == result.put_code and c.ok)
    provider = f" from {used.provider}" if used.provider else ""
    code = f" (put-code {used.put_code})" if put_code else ""
    until = f", valid until {used.valid_until.isoformat()}" if used.valid_until else ", no end date"
    added_by = _added_by(used, AUDIENCES[audience])
    return f'met by "{used.title}"{provider}{code}, added by {added_by}{until}'


def _added_by(candidate: CandidateVerdict, voice: Voice) -> str:
    """Who added an item: the decision says "yourself" for the researcher."""
    words = candidate.added_by
    if words == "yourself" or words.startswith("yourself on behalf of "):
        return voice.yourself + words.removeprefix("yourself")
    return words


def failure_messages(policy: Policy, candidate: CandidateVerdict, audience: str = "researcher"):
    """Why an item does not count, one sentence per failed check, in the audience's voice."""
    voice = AUDIENCES[audience]
    rule = policy.qualifications.get(candidate.qualification)
    messages = []
    for failure in candidate.failures:
        if (
            failure.reason != "wrong_source"
            or voice is RESEARCHER
            or rule is None
            or candidate.by_this_service  # not_issued_as_message: all a steward needs
        ):
            messages.append(failure.message)
        elif candidate.added_by == "an unknown source":
            messages.append(unknown_source_message(policy, rule, voice.yourself))
        else:
            added_by = _added_by(candidate, voice)
            messages.append(wrong_source_message(policy, rule, added_by, voice.yourself))
    return messages


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
    if SELF_ASSERTED in rule.sources:
        # The researcher's own word counts, so any source ORCID names counts too.
        return Need(f'"{rule.label}"', "you or anyone else", rule.max_age_days)
    names = []
    for source in rule.sources:
        if source == SELF_ISSUED:
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


# Advice for each reason a record can be unreadable; a merged record is read_error_advice's.
_READ_ERROR_ADVICE = {
    "record_locked": ReadErrorAdvice(
        "contact ORCID support, who can tell you why your record is locked and how to "
        "unlock it; then check again.",
        orcid_support=True,
    ),
    "record_deactivated": ReadErrorAdvice(
        "contact ORCID support to reactivate your ORCID record; then check again.",
        orcid_support=True,
    ),
    "record_unclaimed": ReadErrorAdvice(
        "claim your ORCID record from the email ORCID sent when it was created (or "
        "contact ORCID support if you cannot find it); then check again.",
        orcid_support=True,
    ),
    "record_not_found": ReadErrorAdvice(
        "sign out and sign in with the ORCID iD you use; if this is it, contact ORCID support.",
        orcid_support=True,
    ),
    "token_invalid": ReadErrorAdvice(
        "sign in with ORCID again and choose Authorize, so that we may read your record.",
        sign_in_again=True,
    ),
    "orcid_unavailable": ReadErrorAdvice("wait a few minutes, then check again."),
    "access_forbidden": ReadErrorAdvice(
        "we could not read part of your ORCID record, so nothing in it can count here. "
        "Contact the data steward, who can look into it with you.",
        steward=True,
    ),
    "too_many_candidates": ReadErrorAdvice(
        "remove the duplicate entries from your ORCID record, then check again; or "
        "contact the data steward.",
        steward=True,
    ),
}
_OTHER_READ_ERROR = ReadErrorAdvice(
    "check again in a few minutes. If it keeps happening, contact ORCID support and "
    "tell the data steward.",
    orcid_support=True,
    steward=True,
)


def read_error_advice(
    error: ReadError, orcid_base_url: str = "https://orcid.org"
) -> ReadErrorAdvice:
    """Advice a researcher can follow for each reason a record could not be read.

    Never asks them to change their ORCID visibility settings: ORCID's integration
    requirements forbid it. What we could not read, we say so, and name the steward.
    """
    if error.reason == "record_deprecated":
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
    return _READ_ERROR_ADVICE.get(error.reason, _OTHER_READ_ERROR)


def next_step(policy: Policy, result: RequirementResult, audience: str = "researcher") -> str:
    """What a researcher can do about an unmet requirement (any option of an any_of)."""
    voice = AUDIENCES[audience]
    return " Or: ".join(_advice(policy, key, result, voice) for key in result.options)


def _advice(policy: Policy, key: str, result: RequirementResult, voice: Voice) -> str:
    rule = policy.qualifications.get(key)
    if rule is None:
        # A logged decision under a policy that has since renamed or dropped it.
        return f'"{key}" is no longer in the policy: check again for today\'s decision.'
    label = f'"{rule.label}"'
    candidates = [c for c in result.candidates if c.qualification == key]
    reasons = {f.reason for c in candidates for f in c.failures}
    if reasons == {"unreadable_item"}:
        if voice is STEWARD:
            return (
                f"ORCID sent an entry that may be {label} in a form we could not read; "
                "look at that entry on their ORCID record."
            )
        return (
            f"ORCID sent us an entry that may be {label} in a form we could not read; "
            "please tell the data steward, who can look into it."
        )
    if reasons == {"not_yet_valid"}:
        return f"wait until {voice.your} {label} starts, then check again."
    if reasons & {"expired", "too_old"}:
        return f"renew {label}, then {_ways_to_add(policy, rule, 'the new one', voice)}."
    if not candidates:
        return f"complete {label}, then {_ways_to_add(policy, rule, 'it', voice)}."
    if "wrong_source" in reasons:
        return f"{_ways_to_add(policy, rule, label, voice)}."
    return f"{_ways_to_add(policy, rule, f'a corrected {label}', voice)}."


def _ways_to_add(policy: Policy, rule, what: str, voice: Voice = RESEARCHER) -> str:
    """Who can add a qualification to the record: its providers, or the researcher.

    Never "ask this site" (we add nothing unless we issue the qualification) nor "ask
    yourself": a self-asserted qualification is one the researcher adds themselves.
    """
    ways = []
    providers = [policy.sources[k].name for k in rule.sources if k in policy.sources]
    if providers:
        ways.append(f"ask {' or '.join(providers)} to add {what} to {voice.your} ORCID record")
    if SELF_ASSERTED in rule.sources:
        ways.append(f"add {what} to {voice.your} ORCID record {voice.themselves}")
    if rule.issue is not None and SELF_ISSUED in rule.sources:
        if rule.issue.accept_terms is not None:
            ways.append(f"accept the current terms for {what} on the dataset's page here")
        elif voice is STEWARD:
            ways.append(f"nothing: a steward grants {what} (`gatekeeper issue`)")
        else:
            ways.append(f"ask the data steward to grant {what} here")
    if not ways:
        if voice is STEWARD:
            ways.append(f"nothing yet: no source in the policy may add {what}")
        else:
            ways.append(f"contact the data steward, who can add {what} for you")
    return " or ".join(ways)


def explain_lines(policy: Policy, decision: Decision, audience: str = "researcher") -> list[str]:
    """The whole decision as lines of text; the command line passes ``audience="steward"``."""
    voice = AUDIENCES[audience]
    dataset = policy.datasets.get(decision.dataset)
    title = dataset.title if dataset else decision.dataset
    verdict = "may open" if decision.allowed else "may not open"
    lines = [f'{decision.orcid} {verdict} "{title}" ({decision.dataset}).']
    if decision.error is not None:
        lines.append(f"We could not check the ORCID record: {decision.error.message}")
        lines.append(f"  (reason: {decision.error.reason})")
        advice = read_error_advice(decision.error)
        support = f" ORCID support: {ORCID_SUPPORT}" if advice.orcid_support else ""
        # The advice speaks to the researcher: a steward passes it on as it is.
        lead = "What to do" if voice is RESEARCHER else "What to tell the researcher"
        lines.append(f"  {lead}: {advice.text}{support}")
    else:
        for result in decision.requirements:
            name = describe_requirement(policy, result)
            if result.met:
                lines.append(f"  [met]     {name}: {met_sentence(result, audience=audience)}.")
                continue
            lines.append(f"  [missing] {name}:")
            if not result.candidates:
                lines.append("      no matching qualification on the ORCID record.")
            for candidate in result.candidates:
                why = "; ".join(failure_messages(policy, candidate, audience))
                put_code = f"put-code {candidate.put_code}" if candidate.put_code else "an item"
                item = f'{put_code} "{candidate.title or "untitled"}"'
                lines.append(f"      {item} does not count: {why}.")
            lines.append(f"      {voice.what_to_do}: {next_step(policy, result, audience)}")
    holds = (
        f"holds until {when(decision.valid_until)}"
        if decision.valid_until
        else "holds with no end date"
    )
    lines.append(
        f"Decided {when(decision.decided_at)} under policy {decision.policy_version}; {holds}."
    )
    return lines
