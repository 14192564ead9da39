"""Reading and checking a qualification a client writes (POST or PUT), as ORCID does.

ORCID's order (ORCID-Source MemberV3ApiServiceDelegatorImpl.createQualification and
updateQualification, AffiliationsManagerImpl.createAffiliation and updateAffiliation,
ActivityValidator.validateAffiliation): the body is parsed first (a body that is no JSON
object is 400/9001); on PUT the put-code in the body must equal the URL's (9019, also when
the body has none) and the writer must be the item's source (9010); then the put-code on
POST (9024), a changed visibility on PUT (9035), the organisation (9046, 9062, 9061, in
that order), the dates (9049, 9055), a duplicate of the same source (409/9021), and last
the disambiguated organisation (9045, OrgManagerImpl.getOrgEntity).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from app.emulator.personas import (
    RELATIONSHIPS,
    VISIBILITIES,
    ExternalId,
    Organization,
    PartialDate,
    Qualification,
    Source,
)

# OrgDisambiguatedSourceType; ORCID answers 9045 for an organisation it does not know.
DISAMBIGUATION_SOURCES = ("RINGGOLD", "GRID", "FUNDREF", "LEI", "ROR")
ROR_URL = re.compile(r"^https://ror\.org/0[0-9a-hjkmnp-tv-z]{6}[0-9]{2}\Z")
COUNTRY = re.compile(r"^[A-Z]{2}\Z")  # Iso3166Country: an enum of alpha-2 codes
DIGITS = re.compile(r"^[0-9]+\Z")


class Refusal(Exception):
    """ORCID's answer to a write it refuses: status, error code, the exception's own
    message (``detail``) and the message parameters (``${name}`` in api_en.properties)."""

    def __init__(self, status: int, code: int, detail: str | None = None, **params: str):
        super().__init__(f"{status}/{code}")
        self.status, self.code, self.detail, self.params = status, code, detail, params


@dataclass(frozen=True, slots=True)
class Incoming:
    """The qualification in a write's body; ``organization`` as sent (maybe half empty)."""

    put_code: int | None
    visibility: str | None
    title: str | None
    department: str | None
    start: dict | None
    end: dict | None
    org_name: str | None
    org_city: str | None
    org_region: str | None
    org_country: str | None
    org_id: str | None
    org_source: str | None
    has_organization: bool
    has_disambiguated: bool
    url: str | None
    external_ids: tuple[ExternalId, ...]


def read_body(data: bytes) -> Incoming:
    """The body's qualification; ``source`` and read-only members are ignored (clearSource).

    :raises Refusal: 400/9001 for a body that is not a JSON object of ORCID's shape.
    """
    try:
        body = json.loads(data or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal(400, 9001, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refusal(400, 9001, "the body must be a JSON object (a qualification)")
    put_code = body.get("put-code")
    if put_code is not None and (isinstance(put_code, bool) or not isinstance(put_code, int)):
        raise Refusal(400, 9001, f"put-code must be a number, not {put_code!r}")
    visibility = body.get("visibility")
    if visibility is not None and visibility not in VISIBILITIES:
        raise Refusal(400, 9001, f"{visibility!r} is not a visibility")
    org = _mapping(body.get("organization"), "organization")
    address = _mapping(org.get("address"), "organization.address") if org else None
    disambiguated = (
        _mapping(org.get("disambiguated-organization"), "disambiguated-organization")
        if org
        else None
    )
    country = _text(address, "country") if address else None
    if country is not None and not COUNTRY.match(country):
        raise Refusal(400, 9001, f"{country!r} is not an ISO 3166-1 alpha-2 country code")
    return Incoming(
        put_code=put_code,
        visibility=visibility,
        title=_text(body, "role-title"),
        department=_text(body, "department-name"),
        start=_mapping(body.get("start-date"), "start-date"),
        end=_mapping(body.get("end-date"), "end-date"),
        has_organization=org is not None,
        org_name=_text(org, "name") if org else None,
        org_city=_text(address, "city") if address else None,
        org_region=_text(address, "region") if address else None,
        org_country=country,
        has_disambiguated=disambiguated is not None,
        org_id=(
            _text(disambiguated, "disambiguated-organization-identifier") if disambiguated else None
        ),
        org_source=_text(disambiguated, "disambiguation-source") if disambiguated else None,
        url=_value(body.get("url"), "url"),
        external_ids=_external_ids(body.get("external-ids")),
    )


def check(incoming: Incoming, *, create: bool, original_visibility: str | None = None) -> None:
    """ActivityValidator.validateAffiliation for a qualification sent through the API.

    :raises Refusal: for the first rule the item breaks, in ORCID's order.
    """
    if create and incoming.put_code is not None:
        raise Refusal(400, 9024)
    if not create and incoming.visibility not in (None, original_visibility):
        raise Refusal(403, 9035)
    # validateDisambiguatedOrgAndExternalIdentifiersForProfessionalActivities
    if not incoming.has_organization:
        raise Refusal(400, 9046)
    if not incoming.has_disambiguated and not incoming.org_name:
        raise Refusal(400, 9046)
    if not incoming.org_id and not incoming.external_ids:
        raise Refusal(400, 9062)
    if (incoming.org_city or incoming.org_region) and not incoming.org_country:
        raise Refusal(400, 9061)
    end = fuzzy_date(incoming.end)  # ORCID reads the end date first
    start = fuzzy_date(incoming.start)
    if start is not None and end is not None and start.first_day() > end.first_day():
        raise Refusal(400, 9055)


def check_organization_known(incoming: Incoming) -> None:
    """OrgManagerImpl.getOrgEntity: a disambiguated organisation must be one ORCID knows;
    the emulator knows the form of each source's IDs (a ROR ID is its full URL).

    :raises Refusal: 400/9045.
    """
    if not incoming.org_id:
        return
    source = (incoming.org_source or "").upper()
    if source not in DISAMBIGUATION_SOURCES or (
        source == "ROR" and not ROR_URL.match(incoming.org_id)
    ):
        raise Refusal(400, 9045)


def duplicate_of(
    incoming: Incoming, items: list[Qualification], client_id: str, put_code: int | None = None
) -> Qualification | None:
    """The item of the same source that shares a ``self`` external ID with ``incoming``.

    ActivityValidator.checkExternalIdentifiersForDuplicates: same source, both
    relationships ``self`` (or both none), equal type and normalised value; on PUT the
    item being updated is skipped.
    """
    for item in items:
        if item.put_code == put_code or item.source.client_id != client_id:
            continue
        for old in item.external_ids:
            for new in incoming.external_ids:
                if (
                    old.relationship == new.relationship
                    and old.relationship in ("self", None)
                    and old.type == new.type
                    and _normalised(old.value) == _normalised(new.value)
                ):
                    return item
    return None


def build(
    incoming: Incoming,
    *,
    put_code: int,
    source: Source,
    visibility: str,
    created: dt.date | dt.datetime,
    modified: dt.datetime | None = None,
) -> Qualification:
    """The stored item: the body's fields with the source, visibility and dates ORCID sets."""
    source_type = incoming.org_source.upper() if incoming.org_id and incoming.org_source else None
    organization = Organization(
        # ORCID names an organisation given only by its ID from its own registry.
        name=incoming.org_name or incoming.org_id or "",
        id=incoming.org_id,
        source=source_type,
        city=incoming.org_city,
        region=incoming.org_region,
        country=incoming.org_country,
    )
    return Qualification(
        put_code=put_code,
        title=incoming.title,
        department=incoming.department,
        organization=organization,
        start=fuzzy_date(incoming.start),
        end=fuzzy_date(incoming.end),
        url=incoming.url,
        external_ids=incoming.external_ids,
        source=source,
        visibility=visibility,
        created=created,
        modified=modified,
    )


def fuzzy_date(raw: dict | None) -> PartialDate | None:
    """A fuzzy date as ORCID's validateFuzzyDate reads it.

    :raises Refusal: 400/9049 for a date it cannot read (no year, a day without a month,
        a day the month does not have).
    """
    if raw is None:
        return None
    parts = [_value(raw.get(key), key) for key in ("year", "month", "day")]
    shown = "-".join(p for p in parts if p)
    year, month, day = parts
    if year is None or (day is not None and month is None):
        raise Refusal(400, 9049, dateString=shown)
    if not all(DIGITS.match(p) for p in parts if p is not None):
        raise Refusal(400, 9049, dateString=shown)
    try:
        dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise Refusal(400, 9049, dateString=shown) from None
    return PartialDate(int(year), int(month) if month else None, int(day) if day else None)


def _normalised(value: str) -> str:
    # PIDNormalizationService: CaseSensitiveNormalizer lower-cases the types ORCID marks
    # case-insensitive; the emulator treats every type so.
    return value.strip().lower()


def _external_ids(raw) -> tuple[ExternalId, ...]:
    container = _mapping(raw, "external-ids")
    if container is None:
        return ()
    entries = container.get("external-id") or []
    if not isinstance(entries, list):
        raise Refusal(400, 9001, "external-ids.external-id must be a list")
    found = []
    for index, entry in enumerate(entries):
        entry = _mapping(entry, f"external-id[{index}]") or {}
        kind, value = _text(entry, "external-id-type"), _text(entry, "external-id-value")
        relationship = entry.get("external-id-relationship")
        if not kind or not value:
            raise Refusal(400, 9001, f"external-id[{index}] needs a type and a value")
        if relationship is not None and relationship not in RELATIONSHIPS:
            raise Refusal(400, 9001, f"{relationship!r} is not a relationship")
        found.append(
            ExternalId(
                type=kind,
                value=value,
                url=_value(entry.get("external-id-url"), "external-id-url"),
                relationship=relationship,
            )
        )
    return tuple(found)


def _mapping(value, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Refusal(400, 9001, f"{where} must be a JSON object")
    return value


def _text(mapping: dict, key: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refusal(400, 9001, f"{key} must be a string")
    return value if value.strip() else None


def _value(wrapper, where: str) -> str | None:
    """ORCID's ``{"value": ...}`` wrapper's text."""
    wrapper = _mapping(wrapper, where)
    return None if wrapper is None else _text(wrapper, "value")
