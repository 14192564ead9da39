"""Build ORCID v3.0 qualification JSON in exactly the API's shape (see shared/orcid-api.md §1).

Tests describe items with keywords; this writes the hyphenated JSON ORCID sends, so
the parser is always tested against ORCID's shape, never against our own model.
"""

from __future__ import annotations

ORCID_HOST = "orcid.org"


def fuzzy(date: str | None):
    """'2025', '2025-06' or '2025-06-30' -> ORCID's fuzzy-date object (or null)."""
    if date is None:
        return None
    parts = date.split("-")
    out = {"year": {"value": parts[0]}, "month": None, "day": None}
    if len(parts) > 1:
        out["month"] = {"value": parts[1]}
    if len(parts) > 2:
        out["day"] = {"value": parts[2]}
    return out


def person(orcid: str):
    return {"uri": f"https://{ORCID_HOST}/{orcid}", "path": orcid, "host": ORCID_HOST}


def client(client_id: str):
    return {
        "uri": f"https://{ORCID_HOST}/client/{client_id}",
        "path": client_id,
        "host": ORCID_HOST,
    }


def source(
    *,
    orcid: str | None = None,
    client_id: str | None = None,
    name: str | None = None,
    origin_orcid: str | None = None,
    origin_client_id: str | None = None,
):
    return {
        "source-orcid": person(orcid) if orcid else None,
        "source-client-id": client(client_id) if client_id else None,
        "source-name": {"value": name} if name is not None else None,
        "assertion-origin-orcid": person(origin_orcid) if origin_orcid else None,
        "assertion-origin-client-id": client(origin_client_id) if origin_client_id else None,
        "assertion-origin-name": None,
    }


def qualification(
    put_code: int,
    *,
    owner: str,
    title: str | None = "Safe Researcher Training",
    src=None,
    start: str | None = None,
    end: str | None = None,
    org_name: str | None = "UK Data Service",
    org_id: str | None = "https://ror.org/05x6aa123",
    org_source: str | None = "ROR",
    url: str | None = None,
    external_ids: list[tuple[str, ...]] = (),  # (type, value[, relationship: self])
    created_ms: int = 1735689600000,  # 2025-01-01T00:00:00Z
    visibility: str = "public",
    no_organization: bool = False,
):
    """One item as ``GET /{orcid}/qualification/{put-code}`` returns it (not wrapped)."""
    organization = None
    if not no_organization:
        organization = {
            "name": org_name,
            "address": {"city": "Colchester", "region": None, "country": "GB"},
            "disambiguated-organization": (
                {
                    "disambiguated-organization-identifier": org_id,
                    "disambiguation-source": org_source,
                }
                if org_id
                else None
            ),
        }
    return {
        "created-date": {"value": created_ms},
        "last-modified-date": {"value": created_ms},
        "source": src if src is not None else source(orcid=owner, name="A Researcher"),
        "put-code": put_code,
        "path": f"/{owner}/qualification/{put_code}",
        "department-name": None,
        "role-title": title,
        "start-date": fuzzy(start),
        "end-date": fuzzy(end),
        "organization": organization,
        "url": {"value": url} if url else None,
        "external-ids": {
            "external-id": [
                {
                    "external-id-type": kind,
                    "external-id-value": value,
                    "external-id-normalized": {"value": value, "transient": True},
                    "external-id-normalized-error": None,
                    "external-id-url": None,
                    "external-id-relationship": relationship,
                }
                for kind, value, relationship in (
                    (*ext, "self") if len(ext) == 2 else ext for ext in external_ids
                )
            ]
        },
        "display-index": "0",
        "visibility": visibility,
    }


def summaries(owner: str, items: list[dict]):
    """``GET /{orcid}/qualifications``: each item in its own affiliation group, wrapped."""
    return {
        "last-modified-date": {"value": 1735689600000} if items else None,
        "affiliation-group": [
            {
                "last-modified-date": item["last-modified-date"],
                "external-ids": item["external-ids"],
                "summaries": [{"qualification-summary": item}],
            }
            for item in items
        ],
        "path": f"/{owner}/qualifications",
    }


def error(status: int, code: int | None, message: str = "error"):
    """ORCID's record-API error body."""
    return {
        "response-code": status,
        "developer-message": f"{status}: {message}",
        "user-message": message,
        "error-code": code,
        "more-info": "https://members.orcid.org/api/resources/troubleshooting",
    }
