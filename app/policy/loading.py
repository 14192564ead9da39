"""Loading a policy from YAML: every problem as ``FILE:LINE: key: message``.

``load_policy(path)`` checks every file against the schema; a policy with any problem
loads nothing. Risky but legal choices come back as warnings on the policy.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import os
import stat
from pathlib import Path

import re2
import yaml

from app.errors import PolicyError
from app.orcid_id import is_valid_orcid_id
from app.policy.model import (
    BUILTIN_SOURCES,
    CLIENT_ID,
    LEGACY_CLIENT_ID,
    NAME,
    SELF_ISSUED,
    AcceptTerms,
    Dataset,
    ExternalIdRule,
    IssueOrganization,
    IssueRule,
    OrganizationRule,
    Policy,
    Problem,
    QualificationRule,
    Requirement,
    TrustedSource,
    _url_parts,
    compile_title_pattern,
    has_nested_quantifier,
    normalize_org_id,
)
from app.qualifications import DISAMBIGUATION_SOURCES, RELATIONSHIPS
from app.request_path import normalize_path
from app.request_path import path_has_prefix as _path_has_prefix


class _Document:
    """One YAML file's data plus the line of every key, for error messages."""

    def __init__(self, file: str, data, lines: dict[tuple, int]):
        self.file, self.data, self.lines = file, data, lines

    def line(self, path: tuple) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


# A policy is a few kB; a file far larger is a mistake (or an attack on the reload).
MAX_POLICY_BYTES = 1024 * 1024
# libyaml's loader when PyYAML was built with it: the same documents, several times faster.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_document(
    file: Path, display: str, problems: list[Problem], loader_class=None
) -> _Document | None:
    try:
        # NOTE: opened without blocking, then checked: a FIFO would wait for a writer,
        # and /dev/zero (or a symlink to it) is "0 bytes" to stat() but never ends.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as opened:
            if not stat.S_ISREG(os.fstat(opened.fileno()).st_mode):
                problems.append(Problem(display, 1, "(file)", "is not a regular file"))
                return None
            raw = opened.read(MAX_POLICY_BYTES + 1)
        if len(raw) > MAX_POLICY_BYTES:
            problems.append(
                Problem(
                    display,
                    1,
                    "(file)",
                    f"the file is over {MAX_POLICY_BYTES} bytes; a policy file may be at most "
                    f"{MAX_POLICY_BYTES}",
                )
            )
            return None
        # As read_text() reads it: universal newlines.
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(display, 1, "(file)", f"cannot read the file: {exc}"))
        return None
    lines: dict[tuple, int] = {}
    try:
        loader = (loader_class or SafeLoader)(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                # NOTE: before construction, which flattens merge keys (<<: *base) into
                # the mapping: a key that overrides a merged one would look defined twice.
                _collect_lines(node, (), lines, display, problems)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        problems.append(yaml_problem(exc, text, display))
        return None
    except ValueError:
        # PyYAML reads 2025-02-30 as a date and fails building it, with no line.
        problems.append(_bad_date_problem(text, display))
        return None
    return _Document(display, data, lines)


def _collect_lines(node, path, lines, display, problems, seen=None):
    """Record the line of every key and item, and flag duplicate keys.

    PyYAML keeps the last of two equal keys without a word; a steward who defines a
    dataset twice in one file almost certainly made a mistake.
    """
    seen = seen if seen is not None else set()
    if id(node) in seen:  # an alias: already walked
        return
    seen.add(id(node))
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        keys_here: dict = {}
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            line = key_node.start_mark.line + 1
            if key in keys_here:
                problems.append(
                    Problem(
                        display,
                        line,
                        _dotted((*path, key)),
                        f"defined twice (first on line {keys_here[key]})",
                    )
                )
            keys_here[key] = line
            lines[(*path, key)] = line
            _collect_lines(value_node, (*path, key), lines, display, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _collect_lines(item, (*path, index), lines, display, problems, seen)


def _key_of(node):
    """A mapping key as the loaded data holds it: ``true:`` is True, ``2024:`` is 2024."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError):  # the merge key <<, or a date no calendar has
        return node.value


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        shown = _as_written(part)
        out += f".{shown}" if out else shown
    return out or "(top)"


def _kind(value) -> str:
    """What YAML made of a plain value, in a steward's words."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dt.date):
        return "a date"
    return "nothing (null)" if value is None else type(value).__name__


def _as_written(key) -> str:
    # YAML reads the keys true, no, null and ~ as True, False and None: show YAML's words.
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def is_test_file(path: Path) -> bool:
    """Whether a file holds policy tests (``*.test.yaml``): never loaded as policy."""
    return path.name.endswith((".test.yaml", ".test.yml"))


def policy_files(path: str | Path) -> list[Path]:
    """The YAML files a policy path names: the file itself, or ``*.yaml`` in a directory.

    A directory's ``*.test.yaml`` files are its tests, not part of the policy.
    """
    root = Path(path)
    if root.is_dir():
        return sorted(
            p
            for p in root.iterdir()
            if p.suffix in (".yaml", ".yml") and p.is_file() and not is_test_file(p)
        )
    return [root]


def did_you_mean(name, choices) -> str | None:
    """The choice a misspelt name most looks like (difflib), or None."""
    if not isinstance(name, str):
        return None
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close:
        # Case and separators are the commonest slips: cache-ttl, Title, self_asserted.
        folded = {c.casefold().replace("-", "_"): c for c in choices}
        match = folded.get(name.casefold().replace("-", "_"))
        close = [match] if match else []
    return close[0] if close and close[0] != name else None


MAX_SUGGESTIONS = 20  # "did you mean" for this many unknown references per load
MAX_LISTED = 30  # known names listed in one message


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def suggestion(name, choices) -> str:
    """``: did you mean 'x'?`` for a misspelt name, or "" when nothing is close."""
    meant = did_you_mean(name, choices)
    return f": did you mean {meant!r}?" if meant else ""


def yaml_problem(exc: yaml.YAMLError, text: str, display: str) -> Problem:
    """A YAML syntax error in a steward's words: where, what, and a hint to fix it.

    libyaml's messages ("did not find expected key") name the parser's state, not the
    slip that caused it; the usual slips are a tab, a key out of line, a missing colon
    and an unclosed bracket or quote, each told apart here from the text itself.
    """
    if isinstance(exc, yaml.reader.ReaderError):
        # No mark, only an offset (in bytes from libyaml, in characters from PyYAML); its
        # text spans lines and names "<unicode string>". The first character YAML
        # refuses is the one it stopped at.
        found = yaml.reader.Reader.NON_PRINTABLE.search(text)
        position = found.start() if found else 0
        before = text[:position]
        line, column = before.count("\n"), position - (before.rfind("\n") + 1)
        character = ord(found[0]) if found else exc.character
        if isinstance(character, str):
            character = ord(character)
        return Problem(
            display,
            line + 1,
            "(yaml)",
            f"YAML syntax error at column {column + 1}: the character U+{character:04X}, "
            "which YAML does not allow; hint: delete it (an editor that shows invisible "
            "characters will find it)",
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    context = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    lines = text.splitlines()
    line, column = (mark.line, mark.column) if mark is not None else (0, 0)

    def source(index: int) -> str:
        return lines[index] if 0 <= index < len(lines) else ""

    def indent(row: str) -> int:
        return len(row) - len(row.lstrip(" "))

    here = source(line)
    what = f"YAML cannot read this ({problem})"
    hint = "compare it with the lines around it, or with the README's example"
    if "cannot start any token" in problem and "\t" in here[: column + 1]:
        what = "a tab character"
        hint = "YAML indents with spaces only: replace the tab with spaces"
    elif "cannot start any token" in problem and here[column : column + 1] in ("@", "`"):
        what = f"a value cannot start with {here[column]!r}"
        hint = "put the value in quotes"
    elif "could not find expected ':'" in problem and context is not None:
        line, column = context.line, context.column
        key = source(line).strip()
        what = f"{key!r} is not followed by a colon"
        hint = f"write '{key}:' (a key, a colon, then its value or an indented block)"
    elif "mapping values are not allowed" in problem:
        before = next(
            (i for i in range(line - 1, -1, -1) if source(i).strip() and not _comment(source(i))),
            None,
        )
        key, _, value = here.strip().partition(": ")
        if value and (": " in value or value.endswith(":")):
            what = "a value holds ': '"
            hint = f"put the value in quotes: {key.strip()}: '{value.strip()}'"
        elif before is not None and not _has_key(source(before)) and not _list_item(source(before)):
            line, column = before, indent(source(before))
            what = f"{source(before).strip()!r} has no colon after its key"
            hint = (
                "a key needs a colon and a space after it, such as "
                "'title: Safe Researcher Training'"
            )
        elif before is not None and indent(here) > indent(source(before)):
            column = indent(here)
            what = "this line is indented further than the key above it"
            hint = (
                f"keys of one mapping start in the same column (column {indent(source(before)) + 1}"
                f" on line {before + 1}); a value goes on the same line as its key"
            )
        else:
            what = "a colon where YAML expected none"
            hint = "write one key per line, each followed by ': ', and quote values with ': '"
    elif "expected key" in problem or "expected <block end>" in problem:
        column = indent(here)
        what = "this line is out of line with the keys above it"
        hint = "the keys of one mapping start in the same column: indent it like its neighbours"
        if context is not None:
            hint = (
                f"indent it like the other keys of the mapping on line {context.line + 1}, "
                f"which start in column {context.column + 1}"
            )
    elif "flow sequence" in str(getattr(exc, "context", "")) and context is not None:
        what = f"the list opened with '[' on line {context.line + 1} is not closed"
        hint = "close it with ']', and separate its items with commas"
    elif "flow mapping" in str(getattr(exc, "context", "")) and context is not None:
        what = f"the mapping opened with '{{' on line {context.line + 1} is not closed"
        hint = "close it with '}', and separate its entries with commas"
    elif "quoted scalar" in str(getattr(exc, "context", "")) and context is not None:
        line, column = context.line, context.column
        what = "this quote is never closed"
        hint = "end the value with the same quote mark it starts with"
    return Problem(
        display,
        line + 1,
        "(yaml)",
        f"YAML syntax error at column {column + 1}: {what}; hint: {hint}",
    )


def _bad_date_problem(text: str, display: str) -> Problem:
    """The first value YAML reads as a date that is no day of the calendar."""
    loader = yaml.SafeLoader(text)
    try:
        stack = [loader.get_single_node()]
        while stack:
            node = stack.pop(0)
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
                try:
                    loader.construct_yaml_timestamp(node)
                except ValueError:
                    return Problem(
                        display,
                        node.start_mark.line + 1,
                        "(yaml)",
                        f"{node.value!r} is not a date in the calendar; write a real date, "
                        "or quote it if it is text",
                    )
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
            elif isinstance(node, yaml.MappingNode):
                stack.extend(n for pair in node.value for n in pair)
    finally:
        loader.dispose()
    return Problem(display, 1, "(yaml)", "a value YAML could not read")


def _comment(row: str) -> bool:
    return row.lstrip().startswith("#")


def _has_key(row: str) -> bool:
    """Whether a line has a key followed by a colon and a space (or the line's end)."""
    text = row.split(" #", 1)[0].rstrip()
    return ": " in text or text.endswith(":")


def _list_item(row: str) -> bool:
    return row.lstrip().startswith("- ") or row.strip() == "-"


def load_policy(path: str | Path) -> Policy:
    """Load and check a policy file or directory.

    :raises PolicyError: listing every problem found; nothing is loaded.
    """
    root = Path(path)
    problems: list[Problem] = []
    if not root.exists():
        raise PolicyError([Problem(str(root), 1, "(file)", "no such file or directory")])
    files = policy_files(root)
    if not files:
        raise PolicyError([Problem(str(root), 1, "(file)", "no *.yaml files in this directory")])
    documents = [d for f in files if (d := _read_document(f, str(f), problems)) is not None]
    checker = _Checker(problems)
    for document in documents:
        checker.collect(document)
    checker.check_references()
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.file, p.line)))
    return Policy(
        warnings=tuple(sorted(checker.warnings, key=lambda p: (p.file, p.line))),
        sources=checker.sources,
        qualifications=checker.qualifications,
        datasets=checker.datasets,
        organisation=checker.organisation,
        version=_version([d.data for d in documents]),
        files=tuple(str(f) for f in files),
    )


def _version(datas) -> str:
    """A short hash of the loaded content: equal policies get equal versions."""
    canonical = json.dumps(datas, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


SECTIONS = ("sources", "qualifications", "datasets")
END_DATE_MEANINGS = ("expiry", "completion")
# Bounds that keep date arithmetic inside datetime's range and mean something.
MAX_AGE_DAYS = 36_500  # a hundred years
MAX_CACHE_TTL = 31_536_000  # a year, in seconds
TOP_KEYS = ("version", "organisation", *SECTIONS)
# GA4GH URL claims (visa value and source) are opaque strings of at most 255 characters.
MAX_CLAIM_URL = 255
SOURCE_KEYS = ("name", "client_ids")
QUALIFICATION_KEYS = (
    "title",
    "title_pattern",
    "organization",
    "external_id",
    "url_prefix",
    "sources",
    "max_age_days",
    "end_date",
    "description",
    "issue",
    "researcher_status",
)
ISSUE_KEYS = (
    "title",
    "organization",
    "url",
    "external_id",
    "valid_for_days",
    "accept_terms",
    "steward",
)
ISSUE_ORGANIZATION_KEYS = ("name", "city", "country", "ror")
# What an external ID template may hold besides text: the researcher's iD, and the
# version of the terms accepted (so that a new version writes a new item).
TEMPLATE_PLACEHOLDER = re2.compile(r"\{orcid\}|\{version\}")
COUNTRY_CODE = re2.compile(r"^[A-Z]{2}$")
DATASET_KEYS = ("title", "paths", "require", "cache_ttl", "description", "visa")
VISA_KEYS = ("value", "source")


class _Issued:
    """The title and URL an ``issue:`` section writes, for the rule's own matchers."""

    __slots__ = ("title", "url")

    def __init__(self, title: str | None, url: str | None):
        self.title, self.url = title, url


class _Checker:
    """Walks every document, building the policy and gathering every problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        self.sources: dict[str, TrustedSource] = {}
        self.qualifications: dict[str, QualificationRule] = {}
        self.datasets: dict[str, Dataset] = {}
        self.defined_in: dict[tuple[str, str], str] = {}
        self.dataset_origin: dict[str, tuple[_Document, tuple]] = {}
        self.references: list[tuple[_Document, tuple, str, str]] = []
        self.warnings: list[Problem] = []
        self.misspelt_sections: set[str] = set()
        self.organisation: str | None = None
        self.organisation_in: str | None = None

    def problem(self, doc: _Document, path: tuple, message: str):
        self.problems.append(Problem(doc.file, doc.line(path), _dotted(path), message))

    def warning(self, doc: _Document, path: tuple, message: str):
        self.warnings.append(Problem(doc.file, doc.line(path), _dotted(path), message))

    def unknown_keys(self, doc, path, mapping, allowed) -> list[str]:
        """Report each key not in ``allowed``; return the allowed keys they look like."""
        meant = []
        for key in mapping:
            if key not in allowed:
                hint = ", ".join(allowed)
                if (close := did_you_mean(key, allowed)) is not None:
                    meant.append(close)
                self.problem(
                    doc,
                    (*path, key),
                    f"unknown key{suggestion(key, allowed)} (allowed here: {hint})",
                )
        return meant

    def collect(self, doc: _Document):
        data = doc.data
        if data is None:
            self.problem(doc, (), "the file is empty")
            return
        if not isinstance(data, dict):
            self.problem(doc, (), "a policy file must be a mapping with version and sections")
            return
        # A misspelt section is one problem: the names it defines are not reported as
        # unknown everywhere they are used, and a misspelt version is not also missing.
        misspelt = self.unknown_keys(doc, (), data, TOP_KEYS)
        self.misspelt_sections.update(m for m in misspelt if m not in data)
        if "version" not in data:
            if "version" not in misspelt:
                self.problem(doc, ("version",), "version is missing: add 'version: 1'")
        elif data["version"] != 1 or isinstance(data["version"], bool):
            self.problem(doc, ("version",), "only version 1 is supported")
        if "organisation" in data:
            self.top_organisation(doc, data)
        for section, build in (
            ("sources", self.source),
            ("qualifications", self.qualification),
            ("datasets", self.dataset),
        ):
            entries = data.get(section)
            if entries is None:
                continue
            if not isinstance(entries, dict):
                self.problem(doc, (section,), "must be a mapping of names to entries")
                continue
            for name, entry in entries.items():
                path = (section, name)
                if not isinstance(name, str):
                    # Shown as written (datasets.2024, not the list index datasets[2024]).
                    self.problems.append(
                        Problem(
                            doc.file,
                            doc.line(path),
                            f"{section}.{_as_written(name)}",
                            f"YAML reads this name as {_kind(name)}, not as text: put it in quotes",
                        )
                    )
                    continue
                if not NAME.match(name):
                    self.problem(doc, path, "names use letters, digits, '-', '_' and '.'")
                    continue
                if section == "sources" and name in BUILTIN_SOURCES:
                    self.problem(doc, path, f"{name!r} is built in and cannot be redefined")
                    continue
                first = self.defined_in.get((section, name))
                if first is not None:
                    self.problem(doc, path, f"defined twice: in {first} and in {doc.file}")
                    continue
                self.defined_in[(section, name)] = doc.file
                if not isinstance(entry, dict):
                    self.problem(doc, path, "must be a mapping")
                    continue
                build(doc, path, name, entry)

    def top_organisation(self, doc, data):
        """``organisation:``, the steward's organisation as a URL, in one file only."""
        value = self.claim_url(doc, (), data, "organisation")
        if value is None:
            return
        if self.organisation_in is not None:
            self.problem(
                doc,
                ("organisation",),
                f"defined twice: in {self.organisation_in} and in {doc.file}",
            )
            return
        self.organisation, self.organisation_in = value, doc.file

    # --- typed fields -------------------------------------------------------------

    def claim_url(self, doc, path, entry, key) -> str | None:
        """A GA4GH URL claim: an https (or http) URL with a host, at most 255 characters,
        compared as an opaque string; None (and a problem) for anything else."""
        value = entry.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, str)
            or len(value) > MAX_CLAIM_URL
            or value != value.strip()
            or any(not char.isprintable() or char.isspace() for char in value)
            or _url_parts(value) is None
        ):
            self.problem(
                doc,
                (*path, key),
                f"must be an https URL of at most {MAX_CLAIM_URL} characters, such as "
                "https://example.org/dac",
            )
            return None
        return value

    def string(self, doc, path, entry, key, required=False) -> str | None:
        value = entry.get(key)
        if value is None:
            if required:
                self.problem(doc, (*path, key), "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(doc, (*path, key), "must be a non-empty string")
            return None
        return value.strip()

    def positive_int(self, doc, path, entry, key, most: int) -> int | None:
        value = entry.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
            self.problem(doc, (*path, key), f"must be a whole number from 1 to {most}")
            return None
        return value

    def choice(self, doc, path, entry, key, allowed: tuple[str, ...]) -> str:
        """One of ``allowed`` (the first is the default)."""
        value = entry.get(key)
        if value is None:
            return allowed[0]
        if value not in allowed:
            self.problem(doc, (*path, key), f"must be one of {', '.join(allowed)}")
            return allowed[0]
        return value

    def string_list(self, doc, path, entry, key) -> dict[int, str]:
        """The list's non-empty strings, keyed by their index in the list.

        Good items come back even beside bad ones so the caller checks them too (the
        recorded problem still stops the load); the index keeps each later problem on
        the item's own line.
        """
        value = entry.get(key)
        if value is None:
            self.problem(doc, (*path, key), "is required")
            return {}
        if not isinstance(value, list) or not value:
            self.problem(doc, (*path, key), "must be a non-empty list")
            return {}
        good = {}
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problem(doc, (*path, key, index), "must be a non-empty string")
            else:
                good[index] = item.strip()
        return good

    # --- sections -----------------------------------------------------------------

    def source(self, doc, path, name, entry):
        self.unknown_keys(doc, path, entry, SOURCE_KEYS)
        display = self.string(doc, path, entry, "name") or name
        client_ids = self.string_list(doc, path, entry, "client_ids")
        for index, client_id in client_ids.items():
            if LEGACY_CLIENT_ID.match(client_id):
                # Legacy clients have iD-shaped IDs, with an iD's check digit.
                if not is_valid_orcid_id(client_id):
                    self.problem(
                        doc,
                        (*path, "client_ids", index),
                        f"{client_id!r} looks like a legacy (iD-shaped) client ID, "
                        "but its check digit is wrong",
                    )
            elif not CLIENT_ID.match(client_id):
                self.problem(
                    doc,
                    (*path, "client_ids", index),
                    f"{client_id!r} is not an ORCID client ID (APP- and 16 letters or digits, "
                    "or a legacy client's iD-shaped ID such as 0000-0002-1825-0097)",
                )
        self.sources[name] = TrustedSource(name, display, tuple(client_ids.values()))

    def qualification(self, doc, path, name, entry):
        self.unknown_keys(doc, path, entry, QUALIFICATION_KEYS)
        title = self.string(doc, path, entry, "title")
        pattern = self.string(doc, path, entry, "title_pattern")
        title_regex = None
        if pattern is not None:
            try:
                title_regex = compile_title_pattern(pattern)
                if title_regex.search("") is not None:
                    self.problem(
                        doc,
                        (*path, "title_pattern"),
                        "matches an empty title, so every item from its sources would "
                        "count; anchor it and name the title, e.g. '^Good Clinical Practice'",
                    )
            except re2.error as exc:
                detail = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc
                self.problem(
                    doc,
                    (*path, "title_pattern"),
                    f"not a valid regular expression: {detail} "
                    "(RE2 syntax: no look-arounds or back-references)",
                )
            else:
                if has_nested_quantifier(pattern):
                    self.warning(
                        doc,
                        (*path, "title_pattern"),
                        "a quantifier inside a quantified group (such as (a+)+) is slow in "
                        "most engines; RE2 keeps it linear here, but simplify it if you can",
                    )
        if title is not None and pattern is not None:
            self.problem(doc, (*path, "title_pattern"), "use title or title_pattern, not both")
        external_id = None
        raw_ext = entry.get("external_id")
        if raw_ext is not None:
            ext_path = (*path, "external_id")
            if not isinstance(raw_ext, dict):
                self.problem(doc, ext_path, "must be a mapping with type and value")
            else:
                self.unknown_keys(doc, ext_path, raw_ext, ("type", "value", "relationship"))
                kind = self.string(doc, ext_path, raw_ext, "type", required=True)
                value = self.string(doc, ext_path, raw_ext, "value", required=True)
                relationship = self.string(doc, ext_path, raw_ext, "relationship") or "self"
                if relationship not in RELATIONSHIPS:
                    self.problem(
                        doc,
                        (*ext_path, "relationship"),
                        f"must be one of {', '.join(RELATIONSHIPS)} (ORCID's relationships)",
                    )
                elif kind and value:
                    external_id = ExternalIdRule(kind, value, relationship)
        if title is None and pattern is None and raw_ext is None:
            self.problem(doc, path, "needs at least one of title, title_pattern, external_id")
        url_prefix = self.string(doc, path, entry, "url_prefix")
        if url_prefix is not None:
            parts = _url_parts(url_prefix)
            if parts is None:
                self.problem(
                    doc,
                    (*path, "url_prefix"),
                    "must be an https:// or http:// URL with a host and no user, query or fragment",
                )
            elif not parts[2].endswith("/"):
                self.problem(
                    doc,
                    (*path, "url_prefix"),
                    f"must end with / so that it names a folder ({url_prefix}/ perhaps): "
                    "a prefix that ends mid-name would also accept its neighbours",
                )
        sources = self.string_list(doc, path, entry, "sources")
        for index, source in sources.items():
            self.references.append((doc, (*path, "sources", index), "source", source))
        end_date = self.choice(doc, path, entry, "end_date", END_DATE_MEANINGS)
        issue = None
        if entry.get("issue") is not None:
            issue = self.issue(doc, (*path, "issue"), entry["issue"], title)
            if SELF_ISSUED not in sources.values():
                self.problem(
                    doc,
                    (*path, "sources"),
                    f"lists no {SELF_ISSUED}, but the rule has issue: what this service "
                    "writes to a record would not count; add self-issued",
                )
            if end_date == "completion":
                self.problem(
                    doc,
                    (*path, "end_date"),
                    "is completion, but an issued item's end date is when it expires "
                    "(valid_for_days): use the default, expiry",
                )
        rule = QualificationRule(
            key=name,
            sources=tuple(sources.values()),
            title=title,
            title_pattern=pattern,
            title_regex=title_regex,
            organization=self.organization(doc, (*path, "organization"), entry.get("organization")),
            external_id=external_id,
            url_prefix=url_prefix,
            max_age_days=self.positive_int(doc, path, entry, "max_age_days", MAX_AGE_DAYS),
            end_date=end_date,
            description=self.string(doc, path, entry, "description"),
            issue=issue,
            researcher_status=self.claim_url(doc, path, entry, "researcher_status"),
        )
        if issue is not None:
            self.check_issued_item_matches(doc, path, rule)
        self.qualifications[name] = rule

    def issue(self, doc, path, raw, rule_title: str | None) -> IssueRule | None:
        """The ``issue:`` section: what this service writes, and how it is earned."""
        if not isinstance(raw, dict):
            self.problem(doc, path, f"must be a mapping with {', '.join(ISSUE_KEYS)}")
            return None
        self.unknown_keys(doc, path, raw, ISSUE_KEYS)
        complete = True
        title = self.string(doc, path, raw, "title") or rule_title
        if title is None:
            self.problem(doc, (*path, "title"), "is required: the title to write (role-title)")
            complete = False
        organization = self.issue_organization(doc, (*path, "organization"), raw)
        url = self.string(doc, path, raw, "url")
        if url is not None and _url_parts(url) is None:
            self.problem(doc, (*path, "url"), "must be an https:// or http:// URL with a host")
        ext_type = ext_value = None
        raw_ext = raw.get("external_id")
        ext_path = (*path, "external_id")
        if raw_ext is None:
            self.problem(
                doc,
                ext_path,
                "is required: an ID such as {type: other-id, value: 'sail-dua-{orcid}'} "
                "makes a second write of the same item ORCID's 'already added'",
            )
        elif not isinstance(raw_ext, dict):
            self.problem(doc, ext_path, "must be a mapping with type and value")
        else:
            self.unknown_keys(doc, ext_path, raw_ext, ("type", "value"))
            ext_type = self.string(doc, ext_path, raw_ext, "type", required=True)
            ext_value = self.string(doc, ext_path, raw_ext, "value", required=True)
            if ext_value is not None and (
                "{" in (rest := TEMPLATE_PLACEHOLDER.sub("", ext_value)) or "}" in rest
            ):
                self.problem(
                    doc,
                    (*ext_path, "value"),
                    f"{ext_value!r}: the only placeholders are {{orcid}} (the researcher's "
                    "iD) and {version} (the version of the terms accepted)",
                )
                ext_value = None
        valid_for_days = self.positive_int(doc, path, raw, "valid_for_days", MAX_AGE_DAYS)
        if raw.get("valid_for_days") is None:
            self.problem(
                doc, (*path, "valid_for_days"), "is required: how many days the item is valid"
            )
        accept_terms = self.accept_terms(doc, (*path, "accept_terms"), raw.get("accept_terms"))
        steward = raw.get("steward")
        if steward is not None and not isinstance(steward, bool):
            self.problem(doc, (*path, "steward"), "must be true (a steward grants it)")
            steward = None
        given = [k for k in ("accept_terms", "steward") if raw.get(k) not in (None, False)]
        if len(given) != 1:
            self.problem(
                doc,
                path,
                "needs exactly one of accept_terms: {url: ..., version: ...} (the researcher "
                "accepts terms on our page) or steward: true (a steward grants it)"
                + (", not both" if len(given) > 1 else ""),
            )
            complete = False
        elif given == ["accept_terms"] and accept_terms is None:
            complete = False
        if ext_value is not None and "{version}" in ext_value and given != ["accept_terms"]:
            self.problem(
                doc,
                (*ext_path, "value"),
                "{version} is the version of accept_terms, which this section does not have",
            )
            complete = False
        elif ext_value is not None and accept_terms is not None and "{version}" not in ext_value:
            self.warning(
                doc,
                (*ext_path, "value"),
                "has no {version}: accepting a new version of the terms renews the same "
                "item instead of writing a new one",
            )
        if not complete or None in (organization, ext_type, ext_value, valid_for_days):
            return None
        return IssueRule(
            title=title,
            organization=organization,
            external_id_type=ext_type,
            external_id_template=ext_value,
            valid_for_days=valid_for_days,
            url=url,
            accept_terms=accept_terms,
            steward=steward is True,
        )

    def issue_organization(self, doc, path, issue) -> IssueOrganization | None:
        raw = issue.get("organization")
        if raw is None:
            self.problem(doc, path, "is required: name, city, country and ror")
            return None
        if not isinstance(raw, dict):
            self.problem(doc, path, "must be a mapping with name, city, country and ror")
            return None
        self.unknown_keys(doc, path, raw, ISSUE_ORGANIZATION_KEYS)
        name = self.string(doc, path, raw, "name", required=True)
        city = self.string(doc, path, raw, "city", required=True)
        country = self.string(doc, path, raw, "country", required=True)
        if country is not None and not COUNTRY_CODE.match(country):
            self.problem(
                doc,
                (*path, "country"),
                f"{country!r} is not an ISO 3166-1 alpha-2 code (two capital letters, such as GB)",
            )
            country = None
        raw_ror = self.string(doc, path, raw, "ror", required=True)
        ror = normalize_org_id("ROR", raw_ror) if raw_ror is not None else None
        if raw_ror is not None and ror is None:
            self.problem(
                doc,
                (*path, "ror"),
                f"{raw_ror!r} is not a ROR ID (https://ror.org/ and 9 characters)",
            )
        if None in (name, city, country, ror):
            return None
        return IssueOrganization(name=name, city=city, country=country, ror=ror)

    def accept_terms(self, doc, path, raw) -> AcceptTerms | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.problem(doc, path, "must be a mapping with url and version")
            return None
        self.unknown_keys(doc, path, raw, ("url", "version"))
        url = self.string(doc, path, raw, "url", required=True)
        if url is not None and _url_parts(url) is None:
            self.problem(doc, (*path, "url"), "must be an https:// or http:// URL with a host")
            url = None
        version = raw.get("version")
        if isinstance(version, (int, float)) and not isinstance(version, bool):
            self.problem(doc, (*path, "version"), f"must be text: quote it, version: '{version}'")
            version = None
        else:
            version = self.string(doc, path, raw, "version", required=True)
        if url is None or version is None:
            return None
        return AcceptTerms(url=url, version=version)

    def check_issued_item_matches(self, doc, path, rule: QualificationRule) -> None:
        """What ``issue:`` writes must meet the rule's own keys, or it would not count."""
        issue = rule.issue
        ror_url = f"https://ror.org/{issue.organization.ror}"
        if rule.has_title_rule and not rule.matches_title(_Issued(issue.title, None)):
            self.problem(
                doc,
                (*path, "issue", "title"),
                f"{issue.title!r} does not match the rule's title, so it would not count",
            )
        if rule.organization is not None and not rule.organization.matches("ROR", ror_url):
            self.problem(
                doc,
                (*path, "issue", "organization", "ror"),
                f"{ror_url} is not the rule's organization ({rule.organization})",
            )
        wanted = rule.external_id
        if wanted is not None and "{orcid}" in wanted.value:
            # Only issue: fills in the iD; the rule's own external_id is matched as written.
            self.problem(
                doc,
                (*path, "external_id", "value"),
                "is matched exactly as written: {orcid} is a placeholder only under issue:, "
                "so no item would match; leave external_id out and let the title identify it",
            )
        elif wanted is not None and not (
            wanted.relationship == "self"
            and wanted.type.casefold() == issue.external_id_type.casefold()
            and "{orcid}" not in issue.external_id_template
            and wanted.value == issue.external_id_value("")
        ):
            self.problem(
                doc,
                (*path, "issue", "external_id"),
                "differs from the rule's external_id, so the item written would not count",
            )
        if rule.url_prefix is not None and not rule.matches_url(_Issued(None, issue.url)):
            self.problem(
                doc,
                (*path, "issue", "url"),
                f"is not under the rule's url_prefix {rule.url_prefix}",
            )

    def organization(self, doc, path, raw) -> OrganizationRule | None:
        """A ROR ID (full URL or bare), or ``{source: GRID, id: ...}`` for any source."""
        if raw is None:
            return None
        if isinstance(raw, str):
            ror = normalize_org_id("ROR", raw)
            if ror is None:
                self.problem(
                    doc,
                    path,
                    f"{raw!r} is not a ROR ID (https://ror.org/ and 9 characters); "
                    "name another kind of organisation ID as {source: GRID, id: ...}",
                )
                return None
            return OrganizationRule("ROR", ror)
        if not isinstance(raw, dict):
            self.problem(doc, path, "must be a ROR ID or a mapping with source and id")
            return None
        self.unknown_keys(doc, path, raw, ("source", "id"))
        source = self.string(doc, path, raw, "source", required=True)
        identifier = self.string(doc, path, raw, "id", required=True)
        if source is None or identifier is None:
            return None
        if source.upper() not in DISAMBIGUATION_SOURCES:
            self.problem(
                doc, (*path, "source"), f"must be one of {', '.join(DISAMBIGUATION_SOURCES)}"
            )
            return None
        normalized = normalize_org_id(source.upper(), identifier)
        if normalized is None:
            self.problem(doc, (*path, "id"), f"{identifier!r} is not a {source.upper()} ID")
            return None
        return OrganizationRule(source.upper(), normalized)

    def dataset(self, doc, path, name, entry):
        self.unknown_keys(doc, path, entry, DATASET_KEYS)
        paths = self.string_list(doc, path, entry, "paths")
        for index, prefix in paths.items():
            if not prefix.startswith("/") or normalize_path(prefix) != prefix:
                self.problem(
                    doc,
                    (*path, "paths", index),
                    f"{prefix!r} must be a clean absolute URL path such as /datasets/{name}/",
                )
        requirements = []
        raw_require = entry.get("require")
        if raw_require is None:
            self.problem(doc, (*path, "require"), "is required: list the qualifications needed")
        elif not isinstance(raw_require, list) or not raw_require:
            self.problem(doc, (*path, "require"), "must be a non-empty list")
        else:
            for index, item in enumerate(raw_require):
                requirement = self.requirement(doc, (*path, "require", index), item)
                if requirement is not None:
                    requirements.append(requirement)
        self.dataset_origin[name] = (doc, path)
        self.datasets[name] = Dataset(
            key=name,
            title=self.string(doc, path, entry, "title") or name,
            paths=tuple(paths.values()),
            require=tuple(requirements),
            cache_ttl=self.positive_int(doc, path, entry, "cache_ttl", MAX_CACHE_TTL),
            description=self.string(doc, path, entry, "description"),
            **self.dataset_visa(doc, path, entry.get("visa")),
        )

    def dataset_visa(self, doc, path, raw) -> dict:
        """``visa: {value, source}``: the URL claims of the dataset's grants."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(doc, (*path, "visa"), "must be a mapping with value and/or source")
            return {}
        self.unknown_keys(doc, (*path, "visa"), raw, VISA_KEYS)
        return {
            "visa_value": self.claim_url(doc, (*path, "visa"), raw, "value"),
            "visa_source": self.claim_url(doc, (*path, "visa"), raw, "source"),
        }

    def requirement(self, doc, path, item) -> Requirement | None:
        if isinstance(item, str) and item.strip():
            self.references.append((doc, path, "qualification", item.strip()))
            return Requirement((item.strip(),))
        if isinstance(item, dict):
            self.unknown_keys(doc, path, item, ("any_of",))
            options = self.string_list(doc, path, item, "any_of")
            if options:
                for index, option in options.items():
                    self.references.append((doc, (*path, "any_of", index), "qualification", option))
                return Requirement(tuple(options.values()))
            return None
        self.problem(doc, path, "must be a qualification name or {any_of: [names]}")
        return None

    def check_references(self):
        # difflib compares a misspelt name with every known one: for the first few only,
        # or a file of thousands of unknown names would take minutes to report.
        suggestions = MAX_SUGGESTIONS

        def hint(name, names) -> str:
            nonlocal suggestions
            suggestions -= 1
            return suggestion(name, names) if suggestions >= 0 else ""

        source_names = sorted(self.sources) + list(BUILTIN_SOURCES)
        qualification_names = sorted(self.qualifications)
        for doc, path, kind, name in self.references:
            if kind == "source":
                if "sources" in self.misspelt_sections and name not in BUILTIN_SOURCES:
                    continue
                if name not in self.sources and name not in BUILTIN_SOURCES:
                    self.problem(
                        doc,
                        path,
                        f"unknown source {name!r}{hint(name, source_names)} "
                        f"(known: {_listed(source_names)})",
                    )
            elif "qualifications" in self.misspelt_sections:
                continue
            elif name not in self.qualifications:
                self.problem(
                    doc,
                    path,
                    f"unknown qualification {name!r}{hint(name, qualification_names)} "
                    f"(known: {_listed(qualification_names) or 'none'})",
                )
        owners: dict[str, str] = {}
        for dataset in self.datasets.values():
            doc, path = self.dataset_origin[dataset.key]
            for index, prefix in enumerate(dataset.paths):
                owner = owners.setdefault(prefix, dataset.key)
                if owner != dataset.key:
                    self.problem(
                        doc,
                        (*path, "paths", index),
                        f"{prefix!r} is already protected by dataset {owner!r}",
                    )
        self.check_prefixes()
        self.check_grant_values()

    def check_grant_values(self):
        """Refuse two datasets whose passport grants would name one URL: a visa granting
        one would grant the other. (A default value, PUBLIC_URL + the first path, is
        unique already: no two datasets share a path.)"""
        granted: dict[str, str] = {}
        for dataset in self.datasets.values():
            if dataset.visa_value is None:
                continue
            first = granted.setdefault(dataset.visa_value, dataset.key)
            if first != dataset.key:
                doc, path = self.dataset_origin[dataset.key]
                self.problem(
                    doc,
                    (*path, "visa", "value"),
                    f"dataset {first!r} grants the same value: a visa for one would open both",
                )

    def check_prefixes(self):
        """Warn where a path that slips out of a dataset's prefix lands under a weaker rule.

        Longest prefix wins, so nesting is legal; but a request a proxy or backend reads
        differently from us (see request_path.py) could be judged by the shorter prefix.
        """
        owners: dict[str, list[Dataset]] = {}
        for dataset in self.datasets.values():
            for prefix in dataset.paths:
                owners.setdefault(prefix, []).append(dataset)
        for dataset in self.datasets.values():
            doc, path = self.dataset_origin[dataset.key]
            for index, prefix in enumerate(dataset.paths):
                self.check_nesting(doc, (*path, "paths", index), prefix, dataset, owners)

    def check_nesting(self, doc, where, prefix: str, dataset, owners: dict) -> None:
        if prefix == "/":
            self.warning(
                doc,
                where,
                "a dataset at / guards every URL that no other dataset claims; "
                "give each dataset its own prefix",
            )
        # The prefixes a path under this one also lies under: each shorter one that ends at
        # a "/" (with or without it), and this one with a "/" added. Looked up, not
        # compared with every other prefix: thousands of paths stay linear.
        outers = {prefix[: i + 1] for i, c in enumerate(prefix) if c == "/"}
        outers |= {prefix[:i] for i, c in enumerate(prefix) if c == "/" and i}
        outers.add(prefix + "/")
        outers.discard(prefix)
        for outer in sorted(outers, key=len):
            if not _path_has_prefix(prefix, outer):
                continue
            for other in owners.get(outer, ()):
                if other is dataset:
                    continue
                missing = [r.label for r in dataset.require if r not in other.require]
                if missing:
                    self.warning(
                        doc,
                        where,
                        f"{prefix!r} lies inside {outer!r} (dataset {other.key!r}), which "
                        f"does not require {', '.join(missing)}: a request judged under the "
                        "shorter prefix needs less",
                    )
