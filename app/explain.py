"""A decision in plain words: the researcher pages and ``gatekeeper explain`` share them."""

from __future__ import annotations

from app.decision import Decision, RequirementResult
from app.policy import SELF_ASSERTED, Policy


def describe_requirement(policy: Policy, result: RequirementResult) -> str:
    """Name a requirement the way a researcher would: by the qualifications' titles."""
    labels = []
    for key in result.options:
        rule = policy.qualifications.get(key)
        labels.append(f'"{rule.label}"' if rule else key)
    return labels[0] if len(labels) == 1 else "one of " + ", ".join(labels)


def met_sentence(result: RequirementResult) -> str:
    used = next(c for c in result.candidates if c.put_code == result.put_code and c.ok)
    provider = f" from {used.provider}" if used.provider else ""
    until = f", valid until {used.valid_until.isoformat()}" if used.valid_until else ""
    return (
        f'met by "{used.title}"{provider} (put-code {used.put_code}), '
        f"added by {used.added_by}{until}"
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
