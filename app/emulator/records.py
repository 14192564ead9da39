"""The v3.0 record API: /{orcid}/qualifications, /qualification/{put-code}, /person.

Reads without a token behave like ORCID's Public API (public items only). Reads with a
token behave like the Member API: a researcher's ``/read-limited`` token also sees their
``limited`` items, and ``private`` ones its own client added; a researcher's token used
on another record is refused (401/9017); and every endpoint checks the record's status
(deprecated 301/9007, locked 409/9018, deactivated 409/9044).
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, request, url_for

from app.emulator import record_json
from app.emulator.personas import Persona
from app.emulator.state import emulator
from app.emulator.tokens import Grant

bp = Blueprint("records", __name__, url_prefix="/v3.0")

# ORCID's JSON media types; it answers XML to a missing or wildcard Accept (§1.1), which
# the emulator cannot, so it refuses those with 406 rather than hide a missing header.
JSON_TYPES = ("application/vnd.orcid+json", "application/orcid+json", "application/json")


@bp.get("/<orcid>/qualifications")
def qualifications(orcid: str):
    persona, grant, mimetype = _open_record(orcid)
    items = [
        q
        for q in persona.qualifications
        if _may_see(grant, orcid, q.visibility, q.source.client_id)
    ]
    return _json(200, record_json.qualifications(persona, items), mimetype)


@bp.get("/<orcid>/qualification/<put_code>")
def qualification(orcid: str, put_code: str):
    persona, grant, mimetype = _open_record(orcid)
    item = persona.qualification(int(put_code)) if put_code.isdigit() else None
    if item is None:
        abort(_error(404, 9016, "The resource was not found.", mimetype))
    if not _may_see(grant, orcid, item.visibility, item.source.client_id):
        if grant is not None and grant.may_read_limited(orcid):
            abort(_error(403, 9013, "The item is private and you are not the source.", mimetype))
        abort(
            _error(
                403,
                9039,
                "The item is not public and cannot be accessed with the Public API.",
                mimetype,
            )
        )
    return _json(200, record_json.qualification(persona, item), mimetype)


@bp.get("/<orcid>/person")
def person(orcid: str):
    persona, grant, mimetype = _open_record(orcid)
    show_name = _may_see(grant, orcid, persona.name.visibility, None)
    return _json(200, record_json.person(persona, show_name=show_name), mimetype)


def _open_record(orcid: str) -> tuple[Persona, Grant | None, str]:
    """The persona, the caller's grant and the media type, or abort with ORCID's error."""
    grant = _bearer_grant()
    mimetype = _negotiate()
    persona = emulator().fixtures.persona(orcid)
    if persona is None or persona.orcid != orcid:
        abort(_error(404, 9016, "The resource was not found.", mimetype))
    if grant is not None and grant.orcid not in (None, orcid):
        abort(_error(401, 9017, "Access token is for a different record.", mimetype))
    uri = record_json.person_uri(orcid)
    if persona.status == "deprecated":
        primary = record_json.person_uri(persona.primary)
        message = f"This account is deprecated. Please refer to account: {primary}."
        response = _error(301, 9007, f"{message} ORCID {uri}", mimetype, user=message)
        response.headers["Location"] = url_for(
            request.endpoint, **{**request.view_args, "orcid": persona.primary}, _external=True
        )
        abort(response)
    if persona.status == "locked":
        abort(
            _error(
                409,
                9018,
                f"The ORCID record is locked and cannot be edited. ORCID {uri}",
                mimetype,
                user="The ORCID record is locked and cannot be edited.",
            )
        )
    if persona.status == "deactivated":
        abort(
            _error(
                409,
                9044,
                f"The ORCID record is deactivated. ORCID {uri}",
                mimetype,
                user="The ORCID record is deactivated.",
            )
        )
    return persona, grant, mimetype


def _bearer_grant() -> Grant | None:
    """The grant behind the request's bearer token; None when there is no token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None  # anonymous, as ORCID treats a request without a bearer token
    token = token.strip()
    grant = emulator().tokens.grant_for(token) if token else None
    if grant is None:
        # Never echo a whole token: a shortened one still tells the caller which it was.
        shown = token[:8] + "..." if len(token) > 8 else token
        body = {"error": "invalid_token", "error_description": f"Invalid access token: {shown}"}
        response = Response(json.dumps(body), 401, mimetype="application/json")
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        abort(response)
    return grant


def _negotiate() -> str:
    for value, quality in request.accept_mimetypes:
        mimetype = value.split(";")[0].strip().lower()
        if quality > 0 and mimetype in JSON_TYPES:
            return mimetype
    abort(
        Response(
            "406 Not Acceptable: the ORCID emulator serves JSON only; send "
            "'Accept: application/vnd.orcid+json' (ORCID answers XML without it).\n",
            406,
            mimetype="text/plain",
        )
    )


def _may_see(grant: Grant | None, orcid: str, visibility: str, source_client: str | None) -> bool:
    if visibility == "public":
        return True
    if grant is None or not grant.may_read_limited(orcid):
        return False
    # ORCID shows a private item only to the client that is its source.
    return visibility == "limited" or (
        source_client is not None and source_client == grant.client_id
    )


def _error(status: int, code: int, developer: str, mimetype: str, *, user: str | None = None):
    body = record_json.error(status, code, developer, user or developer)
    return _json(status, body, mimetype)


def _json(status: int, body: dict, mimetype: str) -> Response:
    return Response(json.dumps(body), status, mimetype=mimetype)
