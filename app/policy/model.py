"""The trust policy as loaded: sources, qualification rules, datasets, and matching.

Pure: the rules judge parsed qualifications and request paths; loading from YAML is
``app.policy.loading``, watching the files ``app.policy.reloading``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import re2

from app.errors import UnknownDataset
from app.qualifications import Qualification, UnreadableItem
from app.request_path import normalize_path
from app.request_path import path_has_prefix as _path_has_prefix

# Python's own regex parser, for the nested-quantifier warning only (nothing is run with it).
re_parser, re_constants = re._parser, re._constants  # type: ignore[attr-defined]
REPEATS = {re_constants.MAX_REPEAT, re_constants.MIN_REPEAT, re_constants.POSSESSIVE_REPEAT}

SELF_ASSERTED = "self-asserted"
SELF_ISSUED = "self-issued"
BUILTIN_SOURCES = (SELF_ASSERTED, SELF_ISSUED)

# ORCID client IDs: APP- and 16 letters or digits (common-3.0.xsd ``client-path``), or a
# legacy client's iD-shaped ID, which ORCID reports under source-client-id (its server
# today) or source-orcid (``source-type``).
CLIENT_ID = re.compile(r"^APP-[0-9A-Za-z]{16}\Z")
LEGACY_CLIENT_ID = re.compile(r"^[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]\Z")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ROR_PREFIXES = ("https://ror.org/", "http://ror.org/", "ror.org/")
# ROR IDs: 0, six of Crockford's base32 (no i, l, o, u), two check digits (ror.readme.io).
ROR_ID = re.compile(r"^0[0-9a-hjkmnp-tv-z]{6}[0-9]{2}\Z")
FUNDREF_PREFIX = re.compile(r"^https?://(dx\.)?doi\.org/", re.IGNORECASE)


# --- the loaded policy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedSource:
    key: str
    name: str
    client_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExternalIdRule:
    type: str
    value: str
    # Only identifiers that name the item itself match by default: an item merely
    # ``part-of`` a programme is not the programme's certificate.
    relationship: str = "self"


@dataclass(frozen=True, slots=True)
class OrganizationRule:
    """A provider organisation: a disambiguation source and its identifier, normalised.

    The identifier alone names no organisation: a GRID ID whose text equals a ROR ID is
    another organisation (``disambiguated-organization`` carries both parts).
    """

    source: str  # ROR, GRID, RINGGOLD, FUNDREF or LEI
    id: str

    def __str__(self) -> str:
        return f"https://ror.org/{self.id}" if self.source == "ROR" else f"{self.source} {self.id}"

    def matches(self, source: str | None, identifier: str | None) -> bool:
        if source is None or identifier is None or source.upper() != self.source:
            return False
        return normalize_org_id(self.source, identifier) == self.id


@dataclass(frozen=True, slots=True)
class IssueOrganization:
    """The organisation this service writes as a qualification's provider."""

    name: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    ror: str  # the bare ROR ID, normalised


@dataclass(frozen=True, slots=True)
class AcceptTerms:
    """Terms the researcher accepts on our page to earn the qualification."""

    url: str
    version: str


@dataclass(frozen=True, slots=True)
class IssueRule:
    """How this service writes a qualification to a researcher's ORCID record.

    ``external_id`` is written with relationship ``self`` and ``{orcid}`` replaced by the
    researcher's iD, so writing twice is ORCID's 409/9021, not a second item. Exactly one
    of ``accept_terms`` and ``steward`` says how it is earned.
    """

    title: str
    organization: IssueOrganization
    external_id_type: str
    external_id_template: str
    valid_for_days: int
    url: str | None = None
    accept_terms: AcceptTerms | None = None
    steward: bool = False

    def external_id_value(self, orcid: str) -> str:
        """The ID written for ``orcid``: {orcid} and the terms' {version} filled in."""
        version = self.accept_terms.version if self.accept_terms is not None else ""
        return self.external_id_template.replace("{orcid}", orcid).replace("{version}", version)

    def wrote(self, item, orcid: str) -> bool:
        """Whether ``item`` carries the ``self`` external ID this rule writes for ``orcid``
        now: not another qualification's item, another researcher's, or (with {version})
        one for terms that have since changed."""
        wanted_type, wanted_value = self.external_id_type.casefold(), self.external_id_value(orcid)
        return any(
            ext.relationship == "self"
            and ext.type.casefold() == wanted_type
            and ext.value.strip() == wanted_value
            for ext in item.external_ids
        )


@dataclass(frozen=True, slots=True)
class QualificationRule:
    key: str
    sources: tuple[str, ...]
    title: str | None = None
    title_pattern: str | None = None
    # RE2 runs in time linear in the title whatever the pattern: a researcher chooses the
    # titles on their record, and one hostile title must never hold a worker.
    title_regex: re2._Regexp | None = field(default=None, compare=False, repr=False)
    organization: OrganizationRule | None = None
    external_id: ExternalIdRule | None = None
    url_prefix: str | None = None
    max_age_days: int | None = None
    description: str | None = None
    # What an item's end date means: "expiry" (valid until then; none: no expiry) or
    # "completion" (the training ended then; none, or still ahead: in progress).
    end_date: str = "expiry"
    # How this service writes it to a record (``issue:``); None: it never does.
    issue: IssueRule | None = None
    # A researcher standard (a URL, such as Registered Access's) this qualification
    # attests: a GA4GH ResearcherStatus visa while it counts (app/passports.py).
    researcher_status: str | None = None

    @property
    def label(self) -> str:
        return self.title or self.description or self.key

    def matches_title(self, qualification: Qualification | UnreadableItem) -> bool:
        title = qualification.title or ""
        if self.title is not None:
            return normalize_title(title) == normalize_title(self.title)
        if self.title_regex is not None:
            return self.title_regex.search(title) is not None
        return True

    def matches_external_id(self, qualification: Qualification) -> bool:
        if self.external_id is None:
            return True
        rule = self.external_id
        return any(
            ext.type.casefold() == rule.type.casefold()
            and ext.value.strip() == rule.value
            and ext.relationship == rule.relationship
            for ext in qualification.external_ids
        )

    def is_candidate(self, qualification: Qualification | UnreadableItem) -> bool:
        """Whether an item claims to be this qualification, before any trust check.

        Identity is the title when the rule names one, else the persistent ID. An item
        we could not read is a candidate unless its title, still readable, is another.
        """
        if isinstance(qualification, UnreadableItem):
            if qualification.title is not None and self.has_title_rule:
                return self.matches_title(qualification)
            return True
        if self.has_title_rule:
            return self.matches_title(qualification)
        return self.matches_external_id(qualification)

    @property
    def has_title_rule(self) -> bool:
        return self.title is not None or self.title_pattern is not None

    def matches_url(self, qualification: Qualification) -> bool:
        """The item's URL lies under ``url_prefix``: same scheme and host, a path below it.

        Compared on the parsed URL, so ``/certs/../other`` or ``certs@elsewhere`` is no
        certificate of this provider; nor is a path that servers read differently (dot
        segments however spelt, ``;`` parameters, encoded slashes: the check's own rules,
        app/request_path.py).
        """
        if self.url_prefix is None:
            return True
        found, wanted = _url_parts(qualification.url or ""), _url_parts(self.url_prefix)
        if found is None or wanted is None or normalize_path(found[2] or "/") is None:
            return False
        segments = unquote(found[2]).split("/")
        if any(segment in (".", "..") for segment in segments):
            return False
        return found[:2] == wanted[:2] and found[2].startswith(wanted[2])

    def matches_organization(self, qualification: Qualification) -> bool:
        if self.organization is None:
            return True
        org = qualification.organization
        if org is None:
            return False
        return self.organization.matches(org.disambiguation_source, org.disambiguated_id)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One entry of ``require``: a single qualification, or ``any_of`` several."""

    options: tuple[str, ...]

    @property
    def label(self) -> str:
        if len(self.options) == 1:
            return self.options[0]
        return "any of: " + ", ".join(self.options)


@dataclass(frozen=True, slots=True)
class Dataset:
    key: str
    title: str
    paths: tuple[str, ...]
    require: tuple[Requirement, ...]
    cache_ttl: int | None = None
    description: str | None = None
    # GA4GH ControlledAccessGrants visas for this dataset (``visa: {value, source}``):
    # the dataset's URL, and the granting organisation's. None: defaults (app/passports.py).
    visa_value: str | None = None
    visa_source: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    sources: dict[str, TrustedSource]
    qualifications: dict[str, QualificationRule]
    datasets: dict[str, Dataset]
    version: str
    files: tuple[str, ...] = ()
    warnings: tuple[Problem, ...] = ()  # legal but risky: policy check prints them
    # The data steward's organisation (a URL): the source of the visas we issue.
    organisation: str | None = None

    def dataset(self, key: str) -> Dataset:
        """:raises UnknownDataset: when the policy has no dataset by that name."""
        try:
            return self.datasets[key]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise UnknownDataset(f"unknown dataset {key!r} (known: {known})") from None

    def rules_for(self, dataset: Dataset) -> list[QualificationRule]:
        keys = dict.fromkeys(k for req in dataset.require for k in req.options)
        return [self.qualifications[k] for k in keys]

    def is_candidate(self, dataset: Dataset, qualification: Qualification) -> bool:
        """Whether an item could count for this dataset: the cheap pre-filter."""
        return any(rule.is_candidate(qualification) for rule in self.rules_for(dataset))

    def who_may_add(self, rule: QualificationRule) -> str:
        """The sources a qualification is accepted from, in words."""
        names = []
        for key in rule.sources:
            if key == SELF_ASSERTED:
                names.append("yourself")
            elif key == SELF_ISSUED:
                names.append("this service")
            else:
                names.append(self.sources[key].name)
        return " or ".join(names)

    def dataset_for_path(self, path: str) -> Dataset | None:
        """The dataset whose ``paths`` prefix matches ``path``, longest prefix first.

        The path is normalised first (percent-decoding, dot segments, repeated slashes),
        because a proxy may hand us the raw request line: ``/open/../secret/`` must be
        judged as ``/secret/``, the file the proxy will actually serve.
        """
        normalized = normalize_path(path)
        if normalized is None:
            return None
        best, best_len = None, -1
        for dataset in self.datasets.values():
            for prefix in dataset.paths:
                if _path_has_prefix(normalized, prefix) and len(prefix) > best_len:
                    best, best_len = dataset, len(prefix)
        return best


def _url_parts(url: str) -> tuple[str, str, str] | None:
    """(scheme, host[:port], path) of an http(s) URL, lower-cased where case is no matter;
    None for anything else, or a URL with user info (``https://host@elsewhere/``)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or "\\" in url:
        return None
    host = parts.netloc.lower()
    return parts.scheme.lower(), host, parts.path or "/"


def compile_title_pattern(pattern: str) -> re2._Regexp:
    """Compile a ``title_pattern`` with RE2, ignoring case.

    :raises re2.error: for a pattern RE2 cannot run (look-arounds, back-references).
    """
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error comes back as an exception, with its text
    return re2.compile(pattern, options)


def has_nested_quantifier(pattern: str) -> bool:
    """Whether a repeated group repeats something inside it: ``(a+)+``, ``(a|b*)*``.

    Read with Python's own regular-expression parser; a pattern it cannot read gets no
    warning (RE2 has already accepted it).
    """
    try:
        tree = re_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False

    def repeats(items, inside: bool) -> bool:
        for op, arg in items:
            if op in REPEATS:
                low, high, sub = arg
                if high != low and (inside or repeats(sub, True)):
                    return True
            elif op is re_constants.SUBPATTERN and repeats(arg[-1], inside):
                return True
            elif op is re_constants.BRANCH and any(repeats(b, inside) for b in arg[1]):
                return True
        return False

    return repeats(tree, False)


def normalize_title(title: str) -> str:
    return " ".join(title.split()).casefold()


def normalize_org_id(source: str, value: str) -> str | None:
    """An organisation ID in one form per source; None when it is not of that source's form.

    ROR: ``https://ror.org/05x6aa123`` and ``05x6aa123`` are one ID; FUNDREF: the DOI with
    or without ``http://dx.doi.org/``; GRID, RINGGOLD and LEI compare without case.
    """
    text = value.strip()
    if source == "ROR":
        text = text.lower()
        for prefix in ROR_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :].rstrip("/")
                break
        return text if ROR_ID.match(text) else None
    if source == "FUNDREF":
        text = FUNDREF_PREFIX.sub("", text)
    return text.casefold() or None


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"
