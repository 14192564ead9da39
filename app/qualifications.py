"""The qualification data model, and parsing ORCID v3.0 qualification JSON into it.

ORCID's hyphenated JSON keys appear only here (and in the emulator, which writes its
own JSON so that a parser bug cannot hide behind a mirrored fake).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from app.errors import MalformedResponse
from app.fuzzy_date import FIRST_YEAR, LAST_YEAR, FuzzyDate
from app.orcid_id import is_valid_orcid_id

DISAMBIGUATION_SOURCES = ("ROR", "GRID", "RINGGOLD", "FUNDREF", "LEI")


@dataclass(frozen=True, slots=True)
class Organization:
    name: str | None
    disambiguated_id: str | None = None
    disambiguation_source: str | None = None  # ROR, GRID, RINGGOLD, FUNDREF or LEI

    def to_dict(self) -> dict:
        return _compact(
            name=self.name,
            disambiguated_id=self.disambiguated_id,
            disambiguation_source=self.disambiguation_source,
        )

    @classmethod
    def from_dict(cls, data: dict) -> Organization:
        return cls(
            data.get("name"), data.get("disambiguated_id"), data.get("disambiguation_source")
        )


# ORCID's relationship types (common-3.0.xsd ``relationship-type``; Relationship.java).
RELATIONSHIPS = ("self", "part-of", "version-of", "funded-by")


@dataclass(frozen=True, slots=True)
class ExternalId:
    type: str
    value: str
    url: str | None = None
    relationship: str | None = None  # one of RELATIONSHIPS; None when ORCID sent none

    def to_dict(self) -> dict:
        return _compact(
            type=self.type, value=self.value, url=self.url, relationship=self.relationship
        )

    @classmethod
    def from_dict(cls, data: dict) -> ExternalId:
        return cls(data["type"], data["value"], data.get("url"), data.get("relationship"))


@dataclass(frozen=True, slots=True)
class Source:
    """Who added the item: a person (``source_orcid``) or an API client.

    ``source_orcid`` and ``assertion_origin_orcid`` hold an iD-shaped identifier: a person,
    or a legacy API client whose ID has the iD form (common-3.0.xsd ``source-type``).
    ``unknown`` is set when ORCID named a source we could not identify: such an item
    counts for nobody, and never falls back to a less specific part of the source.
    """

    source_orcid: str | None = None
    source_client_id: str | None = None
    source_name: str | None = None  # free text: never grants trust
    assertion_origin_orcid: str | None = None
    assertion_origin_client_id: str | None = None
    assertion_origin_name: str | None = None
    unknown: bool = False

    def to_dict(self) -> dict:
        return _compact(
            source_orcid=self.source_orcid,
            source_client_id=self.source_client_id,
            source_name=self.source_name,
            assertion_origin_orcid=self.assertion_origin_orcid,
            assertion_origin_client_id=self.assertion_origin_client_id,
            assertion_origin_name=self.assertion_origin_name,
            unknown=self.unknown or None,
        )

    @classmethod
    def from_dict(cls, data: dict) -> Source:
        return cls(
            source_orcid=data.get("source_orcid"),
            source_client_id=data.get("source_client_id"),
            source_name=data.get("source_name"),
            assertion_origin_orcid=data.get("assertion_origin_orcid"),
            assertion_origin_client_id=data.get("assertion_origin_client_id"),
            assertion_origin_name=data.get("assertion_origin_name"),
            unknown=bool(data.get("unknown", False)),
        )


@dataclass(frozen=True, slots=True)
class Qualification:
    put_code: int
    title: str | None = None
    department: str | None = None
    organization: Organization | None = None
    start: FuzzyDate | None = None
    end: FuzzyDate | None = None
    url: str | None = None
    external_ids: tuple[ExternalId, ...] = ()
    source: Source = field(default_factory=Source)
    created: dt.datetime | None = None
    last_modified: dt.datetime | None = None
    visibility: str | None = None

    def to_dict(self) -> dict:
        """The parsed item as JSON-ready data (absent members left out); ``from_dict``
        gives back an equal ``Qualification``, so a logged decision can be replayed."""
        return _compact(
            put_code=self.put_code,
            title=self.title,
            department=self.department,
            organization=self.organization.to_dict() if self.organization else None,
            start=_str_or_none(self.start),
            end=_str_or_none(self.end),
            url=self.url,
            external_ids=[e.to_dict() for e in self.external_ids] or None,
            source=self.source.to_dict(),
            created=_iso_or_none(self.created),
            last_modified=_iso_or_none(self.last_modified),
            visibility=self.visibility,
        )

    @classmethod
    def from_dict(cls, data: dict) -> Qualification:
        """:raises ValueError: (or KeyError, TypeError) for data no ``to_dict`` wrote."""
        org = data.get("organization")
        return cls(
            put_code=data["put_code"],
            title=data.get("title"),
            department=data.get("department"),
            organization=Organization.from_dict(org) if org is not None else None,
            start=_fuzzy_or_none(data.get("start")),
            end=_fuzzy_or_none(data.get("end")),
            url=data.get("url"),
            external_ids=tuple(ExternalId.from_dict(e) for e in data.get("external_ids") or ()),
            source=Source.from_dict(data.get("source") or {}),
            created=_datetime_or_none(data.get("created")),
            last_modified=_datetime_or_none(data.get("last_modified")),
            visibility=data.get("visibility"),
        )


@dataclass(frozen=True, slots=True)
class UnreadableItem:
    """An item ORCID sent that we could not read: it counts for nothing, but is reported.

    ``title`` is what could still be read of its title (None when even that failed), so
    a rule that names another title can tell it is no candidate.
    """

    put_code: int | None
    title: str | None
    problem: str

    def to_dict(self) -> dict:
        # "unreadable" tells the two kinds apart in a list of both (see item_from_dict).
        return {
            "unreadable": True,
            "put_code": self.put_code,
            "title": self.title,
            "problem": self.problem,
        }

    @classmethod
    def from_dict(cls, data: dict) -> UnreadableItem:
        return cls(data.get("put_code"), data.get("title"), data["problem"])


def item_from_dict(data: dict) -> Qualification | UnreadableItem:
    """A ``Qualification`` or ``UnreadableItem`` from its ``to_dict()`` form.

    :raises ValueError: (or KeyError, TypeError) for data no ``to_dict`` wrote.
    """
    if not isinstance(data, dict):
        raise TypeError("an item must be an object")
    if data.get("unreadable"):
        return UnreadableItem.from_dict(data)
    return Qualification.from_dict(data)


def _compact(**members) -> dict:
    return {key: value for key, value in members.items() if value is not None}


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)


def _iso_or_none(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime_or_none(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _fuzzy_or_none(value: str | None) -> FuzzyDate | None:
    """A FuzzyDate from its ``str()``: ``2025``, ``2025-06`` or ``2025-06-30``."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}(-[0-9]{2}){0,2}", value):
        raise ValueError(f"{value!r} is not a fuzzy date")
    parts = [int(part) for part in value.split("-")]
    return FuzzyDate(*parts)


# --- parsing --------------------------------------------------------------------------


def _value(wrapper) -> str | None:
    """ORCID wraps many strings as ``{"value": "..."}``; absent members are null."""
    if wrapper is None:
        return None
    if isinstance(wrapper, dict):
        inner = wrapper.get("value")
        if inner is None:
            return None
        if isinstance(inner, bool) or not isinstance(inner, (str, int)):
            raise ValueError("expected a string or a number as 'value'")
        return _clean(str(inner))
    raise ValueError("expected {'value': ...}")


# A lone surrogate (JSON allows "\ud800") is no character: it could not be matched,
# encoded for RE2 or printed. It reads as U+FFFD, which no policy title contains.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


# common-3.0.xsd ``orcid-path`` (people and legacy clients) and ``client-path``, which
# also takes a legacy client's iD-shaped ID: ORCID's server files whichever client calls
# it under source-client-id (SourceManagerImpl), legacy clients included.
_ORCID_PATH = re.compile(r"[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]")
_CLIENT_PATH = re.compile(r"APP-[0-9A-Za-z]{16}|[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]")


class _UnknownReference(Exception):
    """A source reference that is present but names nobody we can identify."""


def _reference(wrapper, pattern: re.Pattern) -> str | None:
    """The identifier in ORCID's ``{"uri", "path", "host"}``: from ``path``, else ``uri``.

    The schema makes each member optional but needs ``uri`` or ``path``; ORCID's server
    fills all three today (SourceEntityUtils), but a reader must not drop a reference
    that carries only ``uri``. Present but unidentifiable, or ``path`` and ``uri``
    disagreeing: the source is unknown.

    :raises _UnknownReference: for a non-null reference that names no valid identifier.
    """
    if wrapper is None:
        return None
    if not isinstance(wrapper, dict):
        raise ValueError("expected {'uri', 'path', 'host'}")
    path, uri, host = wrapper.get("path"), wrapper.get("uri"), wrapper.get("host")
    if host is not None and not _is_orcid_host(host):
        raise _UnknownReference()
    from_uri = None
    if uri is not None:
        if not isinstance(uri, str) or not uri.startswith("https://"):
            raise _UnknownReference()
        if not _is_orcid_host(uri[len("https://") :].split("/", 1)[0]):
            raise _UnknownReference()
        from_uri = uri.rstrip("/").rsplit("/", 1)[-1]
    if path is not None and not isinstance(path, str):
        raise _UnknownReference()
    found = path if path is not None else from_uri
    if found is None or not pattern.fullmatch(found):
        raise _UnknownReference()
    if from_uri is not None and from_uri != found:
        raise _UnknownReference()
    if _ORCID_PATH.fullmatch(found) and not is_valid_orcid_id(found):
        raise _UnknownReference()
    return found


def _is_orcid_host(host) -> bool:
    """ORCID's own hosts (common-3.0.xsd ``orcid-uri``, ``client-uri``: https, *orcid.org)."""
    if not isinstance(host, str):
        return False
    host = host.lower()
    return host == "orcid.org" or host.endswith(".orcid.org")


def _either(data: dict, orcid_key: str, client_key: str) -> tuple[str | None, str | None]:
    """One of an iD-form and a client-ID reference (an XSD choice: never both)."""
    orcid = _reference(data.get(orcid_key), _ORCID_PATH)
    client = _reference(data.get(client_key), _CLIENT_PATH)
    if orcid is not None and client is not None:
        raise _UnknownReference()
    return orcid, client


def _text(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return _clean(value).strip() or None


def _millis(wrapper) -> dt.datetime | None:
    raw = _value(wrapper)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,15}", raw):  # int() would take "١٧٣٥" and "1_735"
        raise ValueError(f"{raw!r} is not a time in milliseconds")
    moment = dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)
    # ORCID stamps these from its own clock; the fuzzy dates' range also keeps the date
    # arithmetic (an age limit added to it) inside what Python's dates can hold.
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"{raw!r} is not a time between {FIRST_YEAR} and {LAST_YEAR}")
    return moment


def _organization(data) -> Organization | None:
    # Since the 2025-08 schema change an organisation may be missing altogether.
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("organization must be an object")
    disambiguated = data.get("disambiguated-organization") or {}
    if not isinstance(disambiguated, dict):
        raise ValueError("disambiguated-organization must be an object")
    return Organization(
        name=_text(data.get("name")),
        disambiguated_id=_text(disambiguated.get("disambiguated-organization-identifier")),
        disambiguation_source=(_text(disambiguated.get("disambiguation-source")) or "").upper()
        or None,
    )


def _external_ids(data) -> tuple[ExternalId, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ValueError("external-ids must be an object")
    items = data.get("external-id") or []
    if not isinstance(items, list):
        raise ValueError("external-id must be a list")
    result = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("an external-id must be an object")
        kind, value = _text(item.get("external-id-type")), _text(item.get("external-id-value"))
        if kind is None or value is None:
            raise ValueError("an external-id needs a type and a value")
        relationship = _text(item.get("external-id-relationship"))
        if relationship is not None and relationship not in RELATIONSHIPS:
            raise ValueError(f"unknown external-id-relationship {relationship!r}")
        result.append(
            ExternalId(
                type=kind,
                value=value,
                url=_value(item.get("external-id-url")),
                relationship=relationship,
            )
        )
    return tuple(result)


def _source(data) -> Source:
    if data is None:
        return Source(unknown=True)  # nobody is named: it counts for nobody
    if not isinstance(data, dict):
        raise ValueError("source must be an object")
    names = {
        "source_name": _value(data.get("source-name")),
        "assertion_origin_name": _value(data.get("assertion-origin-name")),
    }
    try:
        source_orcid, source_client = _either(data, "source-orcid", "source-client-id")
        origin_orcid, origin_client = _either(
            data, "assertion-origin-orcid", "assertion-origin-client-id"
        )
    except _UnknownReference:
        return Source(unknown=True, **names)
    if source_orcid is None and source_client is None:
        return Source(unknown=True, **names)
    return Source(
        source_orcid=source_orcid,
        source_client_id=source_client,
        assertion_origin_orcid=origin_orcid,
        assertion_origin_client_id=origin_client,
        **names,
    )


def parse_qualification(data) -> Qualification:
    """Parse one qualification: a full item, or the body of a ``qualification-summary``.

    :raises MalformedResponse: when the JSON is not in ORCID's shape.
    """
    if not isinstance(data, dict):
        raise MalformedResponse("ORCID sent a qualification that is not a JSON object.")
    try:
        return Qualification(
            put_code=_put_code(data.get("put-code")),
            title=_text(data.get("role-title")),
            department=_text(data.get("department-name")),
            organization=_organization(data.get("organization")),
            start=FuzzyDate.from_orcid(data.get("start-date")),
            end=FuzzyDate.from_orcid(data.get("end-date")),
            url=_value(data.get("url")),
            external_ids=_external_ids(data.get("external-ids")),
            source=_source(data.get("source")),
            created=_millis(data.get("created-date")),
            last_modified=_millis(data.get("last-modified-date")),
            visibility=_text(data.get("visibility")),
        )
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise MalformedResponse(f"ORCID sent a qualification we could not read ({exc}).") from exc


def _put_code(value) -> int:
    # A JSON integer; a string of ASCII digits is tolerated (int() alone takes "٣").
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("put-code is missing or not a positive integer")
    return value


def read_item(data) -> Qualification | UnreadableItem:
    """Parse one item, or say what could be told of it when it is malformed."""
    try:
        return parse_qualification(data)
    except MalformedResponse as exc:
        put_code = title = None
        if isinstance(data, dict):
            try:
                put_code = _put_code(data.get("put-code"))
            except ValueError:
                pass
            try:
                title = _text(data.get("role-title"))
            except ValueError:
                pass
        return UnreadableItem(put_code, title, exc.message)


def parse_summaries(data) -> list[Qualification | UnreadableItem]:
    """Parse ``GET /{orcid}/qualifications``: every summary in every affiliation group.

    A malformed summary comes back as an ``UnreadableItem``, so one bad item refuses only
    what it could have counted for, not the whole record.

    :raises MalformedResponse: when the list itself is not in ORCID's shape.
    """
    if not isinstance(data, dict):
        raise MalformedResponse("ORCID sent a qualifications list that is not a JSON object.")
    groups = data.get("affiliation-group")
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise MalformedResponse("ORCID sent an affiliation-group that is not a list.")
    result = []
    for group in groups:
        summaries = group.get("summaries") if isinstance(group, dict) else None
        if not isinstance(summaries, list):
            raise MalformedResponse("ORCID sent an affiliation group without summaries.")
        for wrapper in summaries:
            if not isinstance(wrapper, dict) or "qualification-summary" not in wrapper:
                raise MalformedResponse("ORCID sent a summary without qualification-summary.")
            result.append(read_item(wrapper["qualification-summary"]))
    return result
