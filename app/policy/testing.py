"""Policy tests: researchers and the decisions a steward expects for them, checked.

A test file (``*.test.yaml`` beside the policy) describes researchers by the fields of
their qualifications that matter, and cases: a researcher, a dataset, ``allow`` or
``deny``, and reason codes that must appear. Each qualification is written out as the
JSON ORCID's API would send and parsed by the reader live decisions use
(``app.qualifications.read_item``), then judged by ``decide()``: the policy is tested
exactly as it decides in service. Pure: the caller passes today's date when the file
names none.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from app.decision import Decision, decide
from app.errors import PolicyError
from app.orcid_id import is_valid_orcid_id
from app.policy.loading import (
    SafeLoader,
    _Document,
    _dotted,
    _read_document,
    did_you_mean,
    is_test_file,
    suggestion,
)
from app.policy.model import (
    BUILTIN_SOURCES,
    CLIENT_ID,
    LEGACY_CLIENT_ID,
    SELF_ASSERTED,
    SELF_ISSUED,
    Policy,
    Problem,
    normalize_title,
)
from app.qualifications import (
    DISAMBIGUATION_SOURCES,
    RELATIONSHIPS,
    Qualification,
    UnreadableItem,
    read_item,
)

# The service's own ORCID client in tests, for items `self-issued` (unless the file says).
TEST_SERVICE_CLIENT_ID = "APP-SELFISSUEDTEST01"
# ORCID's documented example iD (Josiah Carberry), for researchers the file gives none.
TEST_RESEARCHER = "0000-0002-1825-0097"
# An item ORCID names no identifiable source for (Source.unknown): it counts for nobody.
UNKNOWN_SOURCE = "unknown"

TOP_KEYS = ("today", "service_client_id", "researchers", "cases")
RESEARCHER_KEYS = ("orcid", "qualifications")
ITEM_KEYS = (
    "title",
    "source",
    "on_behalf_of",
    "organization",
    "external_id",
    "url",
    "start",
    "end",
    "added",
    "put_code",
)
CASE_KEYS = ("researcher", "dataset", "expect", "reasons", "name")
EXPECTATIONS = ("allow", "deny")
# Every reason code a candidate item can fail with (app/decision.py).
REASONS = (
    "wrong_source",
    "expired",
    "not_yet_valid",
    "not_completed",
    "too_old",
    "age_unknown",
    "organization_mismatch",
    "external_id_mismatch",
    "url_mismatch",
    "unreadable_item",
)
FULL_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _DatesAsText(SafeLoader):
    """YAML that leaves 2025-06-30 as text: dates are checked here, each on its own line
    (PyYAML's own date reading stops the whole file at 2025-02-30)."""


_DatesAsText.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP]
    for first, resolvers in SafeLoader.yaml_implicit_resolvers.items()
}

FUZZY_DATE = re.compile(r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?\Z")
ORCID_HOST = "orcid.org"


@dataclass(frozen=True, slots=True)
class Researcher:
    key: str
    orcid: str
    qualifications: tuple[Qualification | UnreadableItem, ...]


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    line: int
    researcher: str
    dataset: str
    allow: bool
    reasons: tuple[str, ...] = ()
    name: str | None = None

    @property
    def label(self) -> str:
        what = f"{self.researcher} on {self.dataset}"
        return f"{self.name} ({what})" if self.name else what


@dataclass(frozen=True, slots=True)
class PolicyTestFile:
    path: str
    today: dt.date
    service_client_id: str
    researchers: dict[str, Researcher]
    cases: tuple[Case, ...]


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision
    missing_reasons: tuple[str, ...]  # expected reason codes the decision does not give

    @property
    def passed(self) -> bool:
        return self.decision.allowed == self.case.allow and not self.missing_reasons

    def why(self) -> str:
        """Why a case failed, in one line."""
        parts = []
        if self.decision.allowed != self.case.allow:
            got = "allow" if self.decision.allowed else "deny"
            parts.append(f"expected {'allow' if self.case.allow else 'deny'}, got {got}")
        if self.missing_reasons:
            parts.append(f"expected reasons not given: {', '.join(self.missing_reasons)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "file": self.case.file,
            "line": self.case.line,
            "name": self.case.name,
            "researcher": self.case.researcher,
            "dataset": self.case.dataset,
            "expect": "allow" if self.case.allow else "deny",
            "reasons": list(self.case.reasons),
            "passed": self.passed,
            "allowed": self.decision.allowed,
            "missing_reasons": list(self.missing_reasons),
            "decision": self.decision.to_dict(),
        }


def files_beside(policy_path: str | Path) -> list[Path]:
    """The test files of a policy: ``*.test.yaml`` in its directory, or ``NAME.test.yaml``
    beside a policy file ``NAME.yaml``."""
    root = Path(policy_path)
    if root.is_dir():
        return sorted(p for p in root.iterdir() if p.is_file() and is_test_file(p))
    sibling = root.with_name(root.stem + ".test" + root.suffix)
    return [sibling] if sibling.is_file() else []


def files_in(path: str | Path) -> list[Path]:
    """The test files a ``--tests`` path names: the file, or ``*.test.yaml`` in a directory."""
    root = Path(path)
    if root.is_dir():
        return sorted(p for p in root.iterdir() if p.is_file() and is_test_file(p))
    return [root]


def load_tests(paths: list[Path], policy: Policy, today: dt.date) -> list[PolicyTestFile]:
    """Read and check test files against a policy; ``today`` where a file names no day.

    :raises PolicyError: listing every problem in every file; no case runs.
    """
    problems: list[Problem] = []
    loaded = []
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 1, "(file)", "no such file or directory"))
            continue
        document = _read_document(path, str(path), problems, _DatesAsText)
        if document is not None:
            test_file = _Reader(document, policy, problems).read(today)
            if test_file is not None:
                loaded.append(test_file)
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.file, p.line)))
    return loaded


def run_tests(policy: Policy, test_files: list[PolicyTestFile]) -> list[CaseResult]:
    """Decide every case as the service would on the file's day (noon UTC)."""
    results = []
    for test_file in test_files:
        now = dt.datetime.combine(test_file.today, dt.time(12), tzinfo=dt.UTC)
        for case in test_file.cases:
            researcher = test_file.researchers[case.researcher]
            decision = decide(
                policy,
                policy.datasets[case.dataset],
                list(researcher.qualifications),
                orcid=researcher.orcid,
                now=now,
                own_client_id=test_file.service_client_id,
            )
            given = {
                f.reason for r in decision.requirements for c in r.candidates for f in c.failures
            }
            missing = tuple(reason for reason in case.reasons if reason not in given)
            results.append(CaseResult(case, decision, missing))
    return results


class _Reader:
    """Checks one test file, gathering every problem, and builds its researchers and cases."""

    def __init__(self, doc: _Document, policy: Policy, problems: list[Problem]):
        self.doc, self.policy, self.problems = doc, policy, problems
        self.misspelt: set[str] = set()

    def problem(self, path: tuple, message: str):
        self.problems.append(Problem(self.doc.file, self.doc.line(path), _dotted(path), message))

    def unknown_keys(self, path: tuple, mapping: dict, allowed: tuple[str, ...]) -> set[str]:
        meant = set()
        for key in mapping:
            if key not in allowed:
                if (close := did_you_mean(key, allowed)) is not None:
                    meant.add(close)
                self.problem(
                    (*path, key),
                    f"unknown key{suggestion(key, allowed)} (allowed here: {', '.join(allowed)})",
                )
        return meant

    def read(self, today: dt.date) -> PolicyTestFile | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem((), "a test file must be a mapping with researchers and cases")
            return None
        # A misspelt section is one problem, not one per case that names its entries.
        self.misspelt = {m for m in self.unknown_keys((), data, TOP_KEYS) if m not in data}
        day = today
        if "today" in data:
            day = _full_date(data["today"])
            if day is None:
                self.problem(("today",), "must be a date such as 2026-06-01")
                day = today
        service = data.get("service_client_id", TEST_SERVICE_CLIENT_ID)
        if not isinstance(service, str) or not CLIENT_ID.match(service):
            self.problem(
                ("service_client_id",), "must be an ORCID client ID (APP- and 16 letters or digits)"
            )
            service = TEST_SERVICE_CLIENT_ID
        researchers = self.researchers(data.get("researchers"), day, service)
        cases = self.cases(data.get("cases"), researchers)
        return PolicyTestFile(self.doc.file, day, service, researchers, cases)

    # --- researchers ------------------------------------------------------------------

    def researchers(self, raw, today: dt.date, service: str) -> dict[str, Researcher]:
        if raw is None:
            if "researchers" not in self.misspelt:
                self.problem(("researchers",), "is required: describe at least one researcher")
            return {}
        if not isinstance(raw, dict) or not raw:
            self.problem(("researchers",), "must be a mapping of names to researchers")
            return {}
        found = {}
        for key, entry in raw.items():
            path = ("researchers", key)
            if not isinstance(key, str) or not key:
                self.problem(path, "a researcher's name must be text")
                continue
            if entry is None:
                entry = {}
            if not isinstance(entry, dict):
                self.problem(path, "must be a mapping with qualifications")
                continue
            self.unknown_keys(path, entry, RESEARCHER_KEYS)
            orcid = entry.get("orcid", TEST_RESEARCHER)
            if not isinstance(orcid, str) or not is_valid_orcid_id(orcid):
                self.problem(
                    (*path, "orcid"),
                    "must be an ORCID iD with a valid check digit, such as 0000-0002-1825-0097",
                )
                orcid = TEST_RESEARCHER
            items = entry.get("qualifications") or []
            if not isinstance(items, list):
                self.problem((*path, "qualifications"), "must be a list of qualifications")
                items = []
            built = []
            for index, item in enumerate(items):
                qualification = self.qualification(
                    (*path, "qualifications", index), item, index + 1, orcid, today, service
                )
                if qualification is not None:
                    built.append(qualification)
            found[key] = Researcher(key, orcid, tuple(built))
        return found

    def qualification(self, path, item, put_code, orcid, today, service):
        """One item as ORCID would send it, parsed by the live reader; None on a problem."""
        if not isinstance(item, dict):
            self.problem(path, "must be a mapping with a title or an external_id")
            return None
        errors = len(self.problems)
        self.unknown_keys(path, item, ITEM_KEYS)
        if item.get("title") is None and item.get("external_id") is None:
            self.problem(path, "needs a title or an external_id")
        title = self.text(path, item, "title")
        url = self.text(path, item, "url")
        put_code = item.get("put_code", put_code)
        if isinstance(put_code, bool) or not isinstance(put_code, int) or put_code <= 0:
            self.problem((*path, "put_code"), "must be a whole number from 1")
            put_code = 1
        start = self.fuzzy_date(path, item, "start")
        end = self.fuzzy_date(path, item, "end")
        added = item.get("added")
        if added is None:
            # As the emulator does: added on its start day, or today when it has none.
            added = _first_day(start) if start else today
        elif (added := _full_date(added)) is None:
            self.problem((*path, "added"), "must be a full date such as 2025-01-15")
            added = today
        source = self.source(path, item, "source", orcid, service, default=SELF_ASSERTED)
        origin = None
        if item.get("on_behalf_of") is not None:
            origin = self.source(path, item, "on_behalf_of", orcid, service, default=None)
        data = {
            "created-date": {"value": _millis(added)},
            "last-modified-date": {"value": _millis(added)},
            "source": _source_json(source, origin),
            "put-code": put_code,
            "path": f"/{orcid}/qualification/{put_code}",
            "department-name": None,
            "role-title": title,
            "start-date": _fuzzy_json(start),
            "end-date": _fuzzy_json(end),
            "organization": self.organization((*path, "organization"), item.get("organization")),
            "url": {"value": url} if url else None,
            "external-ids": {"external-id": self.external_ids(path, item)},
            "visibility": "public",
        }
        if len(self.problems) > errors:
            return None
        parsed = read_item(data)
        if isinstance(parsed, UnreadableItem):
            self.problem(path, f"not an item ORCID could send: {parsed.problem}")
            return None
        if item.get("source") == SELF_ISSUED and item.get("external_id") is None and title:
            # As this service writes it: with the `self` external ID of the issued
            # qualification whose title it carries, for this researcher and the terms as
            # they stand. Give external_id to test an item written for older terms.
            writers = [
                rule
                for rule in self.policy.qualifications.values()
                if rule.issue is not None
                and normalize_title(rule.issue.title) == normalize_title(title)
            ]
            if len(writers) > 1:
                names = ", ".join(rule.key for rule in writers)
                self.problem(
                    (*path, "title"),
                    f"this service writes that title for {names}: give external_id to say "
                    "which one wrote it",
                )
                return None
            if writers:
                issue = writers[0].issue
                written = _external_id_json(
                    issue.external_id_type, issue.external_id_value(orcid), "self"
                )
                data["external-ids"] = {"external-id": [written]}
                parsed = read_item(data)
        return parsed

    def text(self, path, item, key) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem((*path, key), "must be non-empty text")
            return None
        return value

    def fuzzy_date(self, path, item, key) -> tuple[int, int | None, int | None] | None:
        """ORCID's fuzzy date: YYYY, YYYY-MM or YYYY-MM-DD (YAML reads the last as a date)."""
        value = item.get(key)
        if value is None:
            return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.year, value.month, value.day
        match = FUZZY_DATE.match(str(value)) if isinstance(value, (str, int)) else None
        if match is None or isinstance(value, bool):
            self.problem((*path, key), "must be an ORCID date: YYYY, YYYY-MM or YYYY-MM-DD")
            return None
        year, month, day = (int(part) if part else None for part in match.groups())
        if year < 1:
            self.problem((*path, key), f"{value}: there is no year 0")
            return None
        if month is not None and not 1 <= month <= 12:
            self.problem((*path, key), f"{value}: there is no month {month}")
            return None
        if day is not None and not 1 <= day <= calendar.monthrange(year, month)[1]:
            self.problem((*path, key), f"{value}: there is no such day")
            return None
        return year, month, day

    def source(self, path, item, key, orcid, service, default):
        """Who added an item: ("orcid", iD), ("client", ID) or ("unknown", None)."""
        value = item.get(key, default)
        here = (*path, key)
        names = [*sorted(self.policy.sources), *BUILTIN_SOURCES, UNKNOWN_SOURCE, "client:APP-..."]
        if not isinstance(value, str):
            self.problem(here, f"must be a source name (one of {', '.join(names)})")
            return ("unknown", None)
        if value == SELF_ASSERTED:
            return ("orcid", orcid)
        if value == SELF_ISSUED:
            return ("client", service)
        if value == UNKNOWN_SOURCE:
            return ("unknown", None)
        if value.startswith("client:"):
            return self.client(here, value.removeprefix("client:").strip())
        if value in self.policy.sources:
            client_ids = self.policy.sources[value].client_ids
            if not client_ids:
                self.problem(here, f"source {value!r} lists no client IDs")
                return ("unknown", None)
            return self.client(here, client_ids[0])
        self.problem(
            here,
            f"unknown source {value!r}{suggestion(value, names[:-1])} (known: {', '.join(names)})",
        )
        return ("unknown", None)

    def client(self, path, client_id: str):
        if CLIENT_ID.match(client_id):
            return ("client", client_id)
        if LEGACY_CLIENT_ID.match(client_id) and is_valid_orcid_id(client_id):
            # Legacy clients have iD-shaped IDs, reported under source-orcid.
            return ("orcid", client_id)
        self.problem(
            path, f"{client_id!r} is not an ORCID client ID (APP- and 16 letters or digits)"
        )
        return ("unknown", None)

    def organization(self, path, raw) -> dict | None:
        """A ROR ID, or {source: GRID, id: ..., name: ...}, as ORCID's organization object."""
        if raw is None:
            return None
        name, source, identifier = None, "ROR", raw
        if isinstance(raw, dict):
            self.unknown_keys(path, raw, ("source", "id", "name"))
            name, source, identifier = raw.get("name"), raw.get("source", "ROR"), raw.get("id")
        if not isinstance(identifier, str) or not identifier.strip():
            self.problem(path, "must be a ROR ID or a mapping with source and id")
            return None
        if not isinstance(source, str) or source.upper() not in DISAMBIGUATION_SOURCES:
            self.problem((*path, "source"), f"must be one of {', '.join(DISAMBIGUATION_SOURCES)}")
            return None
        return {
            "name": name if isinstance(name, str) else None,
            "address": None,
            "disambiguated-organization": {
                "disambiguated-organization-identifier": identifier.strip(),
                "disambiguation-source": source.upper(),
            },
        }

    def external_ids(self, path, item) -> list[dict]:
        """``external_id``: one {type, value, relationship} mapping, or a list of them."""
        raw = item.get("external_id")
        if raw is None:
            return []
        entries = raw if isinstance(raw, list) else [raw]
        result = []
        for index, entry in enumerate(entries):
            here = (
                (*path, "external_id", index) if isinstance(raw, list) else (*path, "external_id")
            )
            if not isinstance(entry, dict):
                self.problem(here, "must be a mapping with type and value")
                continue
            self.unknown_keys(here, entry, ("type", "value", "relationship"))
            kind, value = entry.get("type"), entry.get("value")
            relationship = entry.get("relationship", "self")
            if not isinstance(kind, str) or not isinstance(value, str) or not kind or not value:
                self.problem(here, "needs a type and a value, both text")
                continue
            if relationship not in RELATIONSHIPS:
                self.problem((*here, "relationship"), f"must be one of {', '.join(RELATIONSHIPS)}")
                continue
            result.append(_external_id_json(kind, value, relationship))
        return result

    # --- cases ------------------------------------------------------------------------

    def cases(self, raw, researchers: dict[str, Researcher]) -> tuple[Case, ...]:
        if raw is None:
            if "cases" not in self.misspelt:
                self.problem(("cases",), "is required: list the decisions you expect")
            return ()
        if not isinstance(raw, list) or not raw:
            self.problem(("cases",), "must be a non-empty list of cases")
            return ()
        found = []
        for index, entry in enumerate(raw):
            path = ("cases", index)
            if not isinstance(entry, dict):
                self.problem(path, "must be a mapping with researcher, dataset and expect")
                continue
            errors = len(self.problems)
            self.unknown_keys(path, entry, CASE_KEYS)
            researcher = entry.get("researcher")
            if researcher is None:
                self.problem((*path, "researcher"), "is required")
            elif not isinstance(researcher, str):
                self.problem((*path, "researcher"), "must be the name of a researcher above")
                researcher = None
            elif researcher not in researchers and "researchers" not in self.misspelt:
                names = sorted(str(k) for k in researchers)
                self.problem(
                    (*path, "researcher"),
                    f"unknown researcher {researcher!r}{suggestion(researcher, names)} "
                    f"(known: {', '.join(names) or 'none'})",
                )
            dataset = entry.get("dataset")
            if dataset is None:
                self.problem((*path, "dataset"), "is required")
            elif not isinstance(dataset, str):
                self.problem((*path, "dataset"), "must be the name of one of the policy's datasets")
            elif dataset not in self.policy.datasets:
                names = sorted(self.policy.datasets)
                self.problem(
                    (*path, "dataset"),
                    f"unknown dataset {dataset!r}{suggestion(dataset, names)} "
                    f"(the policy has: {', '.join(names) or 'none'})",
                )
            expect = entry.get("expect")
            if not isinstance(expect, str) or expect not in EXPECTATIONS:
                self.problem(
                    (*path, "expect"),
                    f"must be allow or deny{suggestion(expect, EXPECTATIONS)}"
                    if expect is not None
                    else "is required: allow or deny",
                )
            reasons = entry.get("reasons") or []
            if not isinstance(reasons, list):
                self.problem((*path, "reasons"), "must be a list of reason codes")
                reasons = []
            for r_index, reason in enumerate(reasons):
                if not isinstance(reason, str):
                    # Never repr'd: an alias bomb in YAML repr's to gigabytes.
                    self.problem(
                        (*path, "reasons", r_index),
                        f"must be a reason code (known: {', '.join(REASONS)})",
                    )
                elif reason not in REASONS:
                    self.problem(
                        (*path, "reasons", r_index),
                        f"unknown reason code {reason[:80]!r}{suggestion(reason, REASONS)} "
                        f"(known: {', '.join(REASONS)})",
                    )
            name = entry.get("name")
            if name is not None and not isinstance(name, str):
                self.problem((*path, "name"), "must be text")
                name = None
            if len(self.problems) > errors or researcher not in researchers:
                continue
            found.append(
                Case(
                    file=self.doc.file,
                    line=self.doc.line(path),
                    researcher=researcher,
                    dataset=dataset,
                    allow=expect == "allow",
                    reasons=tuple(reasons),
                    name=name,
                )
            )
        return tuple(found)


# --- ORCID's JSON ------------------------------------------------------------------------
# The hyphenated keys appear here because a test item must pass through the same parser
# as a live one: a policy that passes its tests then decides live records the same way.


def _reference(kind: str, identifier: str) -> dict:
    where = f"client/{identifier}" if kind == "client" else identifier
    return {"uri": f"https://{ORCID_HOST}/{where}", "path": identifier, "host": ORCID_HOST}


def _source_json(source: tuple[str, str | None], origin: tuple[str, str | None] | None) -> dict:
    kind, identifier = source
    if kind == "unknown":
        # A reference that names nobody: ORCID's parser reads it as an unknown source.
        return {"source-orcid": None, "source-client-id": None, "source-name": None}
    data = {
        "source-orcid": _reference("orcid", identifier) if kind == "orcid" else None,
        "source-client-id": _reference("client", identifier) if kind == "client" else None,
        "source-name": None,
        "assertion-origin-orcid": None,
        "assertion-origin-client-id": None,
        "assertion-origin-name": None,
    }
    if origin is not None and origin[0] != "unknown":
        key = "assertion-origin-orcid" if origin[0] == "orcid" else "assertion-origin-client-id"
        data[key] = _reference(origin[0], origin[1])
    return data


def _fuzzy_json(date: tuple[int, int | None, int | None] | None) -> dict | None:
    if date is None:
        return None
    year, month, day = date
    return {
        "year": {"value": f"{year:04d}"},
        "month": {"value": f"{month:02d}"} if month else None,
        "day": {"value": f"{day:02d}"} if day else None,
    }


def _full_date(value) -> dt.date | None:
    """YYYY-MM-DD as a date; None for anything else (2025-02-30 included)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not FULL_DATE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _external_id_json(kind: str, value: str, relationship: str) -> dict:
    """One external ID as ORCID's JSON carries it."""
    return {
        "external-id-type": kind,
        "external-id-value": value,
        "external-id-normalized": {"value": value, "transient": True},
        "external-id-url": None,
        "external-id-relationship": relationship,
    }


def _first_day(date: tuple[int, int | None, int | None]) -> dt.date:
    year, month, day = date
    return dt.date(year, month or 1, day or 1)


def _millis(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
