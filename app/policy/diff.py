"""What changed between two policies, in words a data steward reads.

Pure: compares two loaded ``Policy`` values (never their YAML text, so reordering keys
or comments changes nothing) and returns one sentence per change, names as the steward
wrote them in the YAML.
"""

from __future__ import annotations

from app.policy.model import Dataset, Policy, QualificationRule, Requirement, TrustedSource


def diff_policies(old: Policy, new: Policy) -> list[str]:
    """Every difference between ``old`` and ``new``: sources, qualifications, datasets."""
    return [
        *_sources(old.sources, new.sources),
        *_qualifications(old, new),
        *_datasets(old.datasets, new.datasets),
    ]


def _quoted(values) -> str:
    return ", ".join(values) if values else "none"


def _value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# --- sources ----------------------------------------------------------------------------


def _sources(old: dict[str, TrustedSource], new: dict[str, TrustedSource]) -> list[str]:
    lines = []
    for key in sorted(new.keys() - old.keys()):
        source = new[key]
        lines.append(
            f'source "{key}" added: {source.name}, trusting client IDs {_quoted(source.client_ids)}'
        )
    for key in sorted(old.keys() - new.keys()):
        lines.append(
            f'source "{key}" removed: client IDs {_quoted(old[key].client_ids)} '
            "are no longer trusted"
        )
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key], new[key]
        if before.name != after.name:
            lines.append(f'source "{key}": name {before.name!r} -> {after.name!r}')
        added = [c for c in after.client_ids if c not in before.client_ids]
        removed = [c for c in before.client_ids if c not in after.client_ids]
        if added:
            lines.append(f'source "{key}": now also trusts client ID {_quoted(added)}')
        if removed:
            lines.append(f'source "{key}": no longer trusts client ID {_quoted(removed)}')
    return lines


# --- qualification rules ----------------------------------------------------------------


def _used_by(policy: Policy, key: str) -> str:
    names = [d.key for d in policy.datasets.values() if any(key in r.options for r in d.require)]
    return f" (required by {', '.join(sorted(names))})" if names else ""


def _rule_words(rule: QualificationRule) -> str:
    parts = []
    if rule.title is not None:
        parts.append(f"title {rule.title!r}")
    if rule.title_pattern is not None:
        parts.append(f"title_pattern {rule.title_pattern!r}")
    if rule.external_id is not None:
        parts.append(f"external_id {_external_id(rule)}")
    parts.append(f"from {' or '.join(rule.sources)}")
    return ", ".join(parts)


def _external_id(rule: QualificationRule) -> str:
    ext = rule.external_id
    if ext is None:
        return "none"
    return f"{ext.type} {ext.value} (relationship {ext.relationship})"


# (what the steward calls it, how to read it from a rule)
RULE_KEYS = (
    ("title", lambda r: _value(r.title)),
    ("title_pattern", lambda r: _value(r.title_pattern)),
    ("external_id", _external_id),
    ("organization", lambda r: str(r.organization) if r.organization else "none"),
    ("url_prefix", lambda r: _value(r.url_prefix)),
    ("max_age_days", lambda r: _value(r.max_age_days)),
    ("end_date", lambda r: r.end_date),
    ("description", lambda r: _value(r.description)),
)


def _qualifications(old_policy: Policy, new_policy: Policy) -> list[str]:
    old, new = old_policy.qualifications, new_policy.qualifications
    lines = []
    for key in sorted(new.keys() - old.keys()):
        lines.append(
            f'qualification "{key}" added: {_rule_words(new[key])}{_used_by(new_policy, key)}'
        )
    for key in sorted(old.keys() - new.keys()):
        lines.append(f'qualification "{key}" removed{_used_by(old_policy, key)}')
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key], new[key]
        used = _used_by(new_policy, key)
        added = [s for s in after.sources if s not in before.sources]
        removed = [s for s in before.sources if s not in after.sources]
        if added:
            lines.append(f'qualification "{key}": now also accepted from {_quoted(added)}{used}')
        if removed:
            lines.append(f'qualification "{key}": no longer accepted from {_quoted(removed)}{used}')
        for name, read in RULE_KEYS:
            if read(before) != read(after):
                lines.append(f'qualification "{key}": {name} {read(before)} -> {read(after)}{used}')
    return lines


# --- datasets -----------------------------------------------------------------------------


def _requires(dataset: Dataset) -> str:
    return " and ".join(r.label for r in dataset.require)


def _datasets(old: dict[str, Dataset], new: dict[str, Dataset]) -> list[str]:
    lines = []
    for key in sorted(new.keys() - old.keys()):
        dataset = new[key]
        lines.append(
            f'dataset "{key}" added: paths {_quoted(dataset.paths)}; requires {_requires(dataset)}'
        )
    for key in sorted(old.keys() - new.keys()):
        lines.append(
            f'dataset "{key}" removed: paths {_quoted(old[key].paths)} are no longer its own'
        )
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key], new[key]
        added = [p for p in after.paths if p not in before.paths]
        removed = [p for p in before.paths if p not in after.paths]
        if added:
            lines.append(f'dataset "{key}": now also protects {_quoted(added)}')
        if removed:
            lines.append(f'dataset "{key}": no longer protects {_quoted(removed)}')
        lines.extend(f'dataset "{key}": {line}' for line in _requirements(before, after))
        for name in ("title", "cache_ttl", "description"):
            was, now = getattr(before, name), getattr(after, name)
            if was != now:
                lines.append(f'dataset "{key}": {name} {_value(was)} -> {_value(now)}')
    return lines


def _requirements(before: Dataset, after: Dataset) -> list[str]:
    """Requirements added, removed, or an ``any_of`` that accepts more or fewer names."""
    old = [r for r in before.require if r not in after.require]
    new = [r for r in after.require if r not in before.require]
    lines = []
    for requirement in new:
        match = _overlapping(requirement, old)
        if match is None:
            lines.append(f"now requires {requirement.label}")
            continue
        old.remove(match)
        if set(match.options) == set(requirement.options):
            continue  # the same names in another order
        more = [o for o in requirement.options if o not in match.options]
        fewer = [o for o in match.options if o not in requirement.options]
        change = [f"now also accepts {_quoted(more)}"] if more else []
        change += [f"no longer accepts {_quoted(fewer)}"] if fewer else []
        lines.append(f"requirement {match.label!r} {' and '.join(change)}")
    lines.extend(f"no longer requires {requirement.label}" for requirement in old)
    return lines


def _overlapping(requirement: Requirement, candidates: list[Requirement]) -> Requirement | None:
    return next((c for c in candidates if set(c.options) & set(requirement.options)), None)
