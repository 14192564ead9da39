"""ORCID v3.0 JSON, written by hand from the API description (shared/orcid-api.md §1, §4).

Deliberately independent of ``app.qualifications``: if the two shared code, a parser
bug would be mirrored here and the tests would still pass.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import replace

from app.emulator.personas import (
    ExternalId,
    Name,
    Organization,
    PartialDate,
    Persona,
    Qualification,
    Source,
)

ORCID_HOST = "orcid.org"
MORE_INFO = "https://members.orcid.org/api/resources/troubleshooting"


def qualifications(
    persona: Persona, items: list[Qualification], user_obo_clients: frozenset[str] = frozenset()
) -> dict:
    """``GET /{orcid}/qualifications``: the visible items in affiliation groups.

    Grouped as ORCID's ActivitiesGroupGenerator groups them: items sharing a groupable
    identifier are one group, and an item sharing identifiers with two groups merges them.
    Empty groups never appear, as on ORCID's filtered reads.
    """
    return {
        "last-modified-date": _latest(items) if items else None,
        "affiliation-group": [
            {
                "last-modified-date": _latest(members),
                # AffiliationsManagerReadOnlyImpl.group: the group's keys, or an empty list.
                "external-ids": {"external-id": [_external_id(e) for e in keys.values()]},
                "summaries": [
                    {"qualification-summary": qualification(persona, i, user_obo_clients)}
                    for i in members
                ],
            }
            for keys, members in _groups(items)
        ],
        "path": f"/{persona.orcid}/qualifications",
    }


def qualification(
    persona: Persona, item: Qualification, user_obo_clients: frozenset[str] = frozenset()
) -> dict:
    """``GET /{orcid}/qualification/{put-code}``: one item, not wrapped (§1.3)."""
    return {
        "created-date": _millis(item.created),
        "last-modified-date": _millis(item.modified or item.created),
        "source": _source(_as_read(item.source, persona, user_obo_clients)),
        "put-code": item.put_code,
        "path": f"/{persona.orcid}/qualification/{item.put_code}",
        "department-name": item.department,
        "role-title": item.title,
        "start-date": _fuzzy_date(item.start),
        "end-date": _fuzzy_date(item.end),
        "organization": _organization(item.organization),
        "url": _value(item.url),
        # No identifiers: ORCID writes the container as null, not as an empty list.
        "external-ids": (
            {"external-id": [_external_id(e) for e in item.external_ids]}
            if item.external_ids
            else None
        ),
        "display-index": "0",
        "visibility": item.visibility,
    }


def person(persona: Persona, *, show_name: bool) -> dict:
    """``GET /{orcid}/person``: the name (when the caller may see it) and empty sections."""
    orcid = persona.orcid

    def empty(items_key: str, path: str) -> dict:
        return {"last-modified-date": None, items_key: [], "path": f"/{orcid}/{path}"}

    created = _millis(_RECORD_CREATED)
    return {
        "last-modified-date": created if show_name else None,
        "name": _name(persona.name, orcid, created) if show_name else None,
        "other-names": empty("other-name", "other-names"),
        "biography": None,
        "researcher-urls": empty("researcher-url", "researcher-urls"),
        "emails": empty("email", "email"),
        "addresses": empty("address", "address"),
        "keywords": empty("keyword", "keywords"),
        "external-identifiers": empty("external-identifier", "external-identifiers"),
        "path": f"/{orcid}/person",
    }


def error(status: int, code: int, developer: str, user: str) -> dict:
    """The record API's error body (§4.1)."""
    return {
        "response-code": status,
        "developer-message": developer,
        "user-message": user,
        "error-code": code,
        "more-info": MORE_INFO,
    }


def person_uri(orcid: str) -> str:
    return f"https://{ORCID_HOST}/{orcid}"


# --- pieces -------------------------------------------------------------------------------

_RECORD_CREATED = dt.date(2020, 1, 1)  # when every persona's record (and name) was made


def _value(value) -> dict | None:
    return None if value is None else {"value": value}


def _millis(moment: dt.date | dt.datetime) -> dict:
    """ORCID's JSON timestamps: epoch milliseconds (a fixture's day: its midnight UTC)."""
    return {"value": _epoch_ms(moment)}


def _epoch_ms(moment: dt.date | dt.datetime) -> int:
    millis = calendar.timegm(moment.timetuple()) * 1000
    if isinstance(moment, dt.datetime):
        millis += moment.microsecond // 1000
    return millis


def _latest(items: list[Qualification]) -> dict:
    """The latest change among ``items`` (Api3_0LastModifiedDatesHelper)."""
    return {"value": max(_epoch_ms(i.modified or i.created) for i in items)}


def _fuzzy_date(date: PartialDate | None) -> dict | None:
    if date is None:
        return None
    return {
        "year": {"value": f"{date.year:04d}"},
        "month": None if date.month is None else {"value": f"{date.month:02d}"},
        "day": None if date.day is None else {"value": f"{date.day:02d}"},
    }


def _person_ref(orcid: str | None) -> dict | None:
    if orcid is None:
        return None
    return {"uri": person_uri(orcid), "path": orcid, "host": ORCID_HOST}


def _client_ref(client_id: str | None) -> dict | None:
    if client_id is None:
        return None
    return {
        "uri": f"https://{ORCID_HOST}/client/{client_id}",
        "path": client_id,
        "host": ORCID_HOST,
    }


def _source(source: Source) -> dict:
    return {
        "source-orcid": _person_ref(source.orcid),
        "source-client-id": _client_ref(source.client_id),
        "source-name": _value(source.name),
        "assertion-origin-orcid": _person_ref(source.origin_orcid),
        "assertion-origin-client-id": _client_ref(source.origin_client_id),
        "assertion-origin-name": _value(source.origin_name),
    }


def _organization(org: Organization | None) -> dict | None:
    if org is None:
        return None
    return {
        "name": org.name,
        # The address object stays when its members are empty; they read as null
        # (ActivityUtils.cleanOrganizationEmptyFields).
        "address": {"city": org.city, "region": org.region, "country": org.country},
        "disambiguated-organization": (
            {
                "disambiguated-organization-identifier": org.id,
                "disambiguation-source": org.source,
            }
            if org.id
            else None
        ),
    }


def _external_id(ext: ExternalId) -> dict:
    return {
        "external-id-type": ext.type,
        "external-id-value": ext.value,
        "external-id-normalized": {"value": ext.value, "transient": True},
        "external-id-normalized-error": None,
        "external-id-url": _value(ext.url),
        "external-id-relationship": ext.relationship,
    }


def _groups(
    items: list[Qualification],
) -> list[tuple[dict[tuple[str, str], ExternalId], list[Qualification]]]:
    """ActivitiesGroupGenerator.group: (group keys, items) per group, in ORCID's order.

    An item joins the first group that shares one of its keys; the other groups sharing
    one are merged into that group and removed.
    """
    groups: list[tuple[dict[tuple[str, str], ExternalId], list[Qualification]]] = []
    for item in items:
        keys = {(e.type, e.value): e for e in item.external_ids if _is_groupable(e)}
        sharing = [g for g in groups if g[0].keys() & keys.keys()]
        if not sharing:
            groups.append((keys, [item]))
            continue
        first = sharing[0]
        for other in sharing[1:]:
            for key, ext in other[0].items():
                first[0].setdefault(key, ext)
            first[1].extend(other[1])
            groups.remove(other)
        for key, ext in keys.items():
            first[0].setdefault(key, ext)
        first[1].append(item)
    return groups


def _is_groupable(ext: ExternalId) -> bool:
    # orcid-model ExternalID.isGroupAble: never part-of or funded-by, never an empty value.
    return ext.relationship not in ("part-of", "funded-by") and bool(ext.value)


def _as_read(source: Source, persona: Persona, user_obo_clients: frozenset[str]) -> Source:
    """The source as ORCID reports it: an item that a user-OBO client (search-and-link)
    wrote has the record holder as its assertion origin (SourceEntityUtils
    .extractSourceFromEntity), whatever was stored."""
    if source.client_id not in user_obo_clients:
        return source
    name = persona.name.display if persona.name.visibility == "public" else None
    return replace(source, origin_orcid=persona.orcid, origin_name=name)


def _name(name: Name, orcid: str, created: dict) -> dict:
    return {
        "created-date": created,
        "last-modified-date": created,
        "given-names": _value(name.given),
        "family-name": _value(name.family),
        "credit-name": _value(name.credit),
        "source": None,
        "visibility": name.visibility,
        "path": orcid,
    }
