"""The qualification data model, and parsing ORCID v3.0 qualification JSON into it.

ORCID's hyphenated JSON keys appear only here (and in the emulator, which writes its
own JSON so that a parser bug cannot hide behind a mirrored fake).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from app.errors import MalformedResponse
from app.fuzzy_date import FuzzyDate

DISAMBIGUATION_SOURCES = ("ROR", "GRID", "RINGGOLD", "FUNDREF", "LEI")


@dataclass(frozen=True, slots=True)
class Organization:
    name: str | None
    disambiguated_id: str | None = None
    disambiguation_source: str | None = None  # ROR, GRID, RINGGOLD, FUNDREF or LEI


@dataclass(frozen=True, slots=True)
class ExternalId:
    type: str
    value: str
    url: str | None = None
    relationship: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Who added the item: a person (``source_orcid``) or an API client."""

    source_orcid: str | None = None
    source_client_id: str | None = None
    source_name: str | None = None  # free text: never grants trust
    assertion_origin_orcid: str | None = None
    assertion_origin_client_id: str | None = None
    assertion_origin_name: str | None = None


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


# --- parsing --------------------------------------------------------------------------


def _value(wrapper) -> str | None:
    """ORCID wraps many strings as ``{"value": "..."}``; absent members are null."""
    if wrapper is None:
        return None
    if isinstance(wrapper, dict):
        inner = wrapper.get("value")
        return None if inner is None else str(inner)
    raise ValueError("expected {'value': ...}")


def _path(wrapper) -> str | None:
    """ORCID identifies people and clients as ``{"uri", "path", "host"}``: take ``path``."""
    if wrapper is None:
        return None
    if isinstance(wrapper, dict):
        path = wrapper.get("path")
        return None if path is None else str(path).strip()
    raise ValueError("expected {'uri', 'path', 'host'}")


def _text(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip() or None


def _millis(wrapper) -> dt.datetime | None:
    raw = _value(wrapper)
    if raw is None:
        return None
    return dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)


def _organization(data) -> Organization | None:
    # Since the 2025-08 schema change an organisation may be missing altogether.
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("organization must be an object")
    disambiguated = data.get("disambiguated-organization") or {}
    return Organization(
        name=_text(data.get("name")),
        disambiguated_id=_text(disambiguated.get("disambiguated-organization-identifier")),
        disambiguation_source=(_text(disambiguated.get("disambiguation-source")) or "").upper()
        or None,
    )


def _external_ids(data) -> tuple[ExternalId, ...]:
    if data is None:
        return ()
    items = data.get("external-id") or []
    if not isinstance(items, list):
        raise ValueError("external-id must be a list")
    result = []
    for item in items:
        kind, value = _text(item.get("external-id-type")), _text(item.get("external-id-value"))
        if kind is None or value is None:
            raise ValueError("an external-id needs a type and a value")
        result.append(
            ExternalId(
                type=kind,
                value=value,
                url=_value(item.get("external-id-url")),
                relationship=_text(item.get("external-id-relationship")),
            )
        )
    return tuple(result)


def _source(data) -> Source:
    if data is None:
        return Source()
    if not isinstance(data, dict):
        raise ValueError("source must be an object")
    return Source(
        source_orcid=_path(data.get("source-orcid")),
        source_client_id=_path(data.get("source-client-id")),
        source_name=_value(data.get("source-name")),
        assertion_origin_orcid=_path(data.get("assertion-origin-orcid")),
        assertion_origin_client_id=_path(data.get("assertion-origin-client-id")),
        assertion_origin_name=_value(data.get("assertion-origin-name")),
    )


def parse_qualification(data) -> Qualification:
    """Parse one qualification: a full item, or the body of a ``qualification-summary``.

    :raises MalformedResponse: when the JSON is not in ORCID's shape.
    """
    if not isinstance(data, dict):
        raise MalformedResponse("ORCID sent a qualification that is not a JSON object.")
    try:
        put_code = data.get("put-code")
        if isinstance(put_code, bool) or not isinstance(put_code, (int, str)):
            raise ValueError("put-code is missing")
        return Qualification(
            put_code=int(put_code),
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


def parse_summaries(data) -> list[Qualification]:
    """Parse ``GET /{orcid}/qualifications``: every summary in every affiliation group.

    :raises MalformedResponse: when the JSON is not in ORCID's shape.
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
            result.append(parse_qualification(wrapper["qualification-summary"]))
    return result
