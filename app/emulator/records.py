"""The v3.0 record API: /{orcid}/qualifications, /qualification/{put-code}, /person, and
writing qualifications: POST /{orcid}/qualification, PUT and DELETE
/{orcid}/qualification/{put-code}.

Served under three base paths (``APIS``):

- ``/pub/v3.0`` plays ORCID's Public API (``pub.orcid.org``, PublicV3ApiServiceDelegatorImpl):
  public items only, with or without a token; ``/qualifications`` and
  ``/qualification/{put-code}`` do not check the record's status, so they answer 200 for
  a locked or deactivated record, and only ``/person`` refuses it.
- ``/api/v3.0`` plays the Member API (``api.orcid.org``, MemberV3ApiServiceDelegatorImpl):
  a token is required; every call checks the record's status first; a researcher's
  ``/read-limited`` token also sees their ``limited`` items, and ``private`` ones its own
  client added; a researcher's token on another record, or a public client's token, is
  refused (401/9017).
- ``/v3.0`` is the emulator's own blend, for the demo and tests that want every refusal
  without a ``/person`` read: anonymous reads see what the Public API shows, token reads
  what the Member API shows, and every call checks the record's status. ORCID has no such
  host.

Writes (writes.py checks the body) take a member client's token for the record with
``/activities/update``, on ``/api/v3.0`` and ``/v3.0`` alike; the Public API answers
405. A new item has the writing client as its source and the researcher's default
visibility (the persona's ``default_visibility``); only its source may update or delete
it.

Status checks follow OrcidSecurityManagerImpl.checkProfile's order: deprecated (301/9007),
unclaimed (409/9036), locked (409/9018), deactivated (409/9044).
"""

from __future__ import annotations

import datetime as dt
import json
import re

from flask import Blueprint, Response, abort, request, url_for

from app.emulator import record_json, writes
from app.emulator.personas import Client, Persona, Qualification, Source
from app.emulator.state import emulator
from app.emulator.tokens import Grant

bp = Blueprint("records", __name__, url_prefix="/v3.0")

BLENDED, PUBLIC, MEMBER = "records", "public_api", "member_api"
# Blueprint name -> base path; the blueprint is registered once under each.
APIS = {BLENDED: "/v3.0", PUBLIC: "/pub/v3.0", MEMBER: "/api/v3.0"}

# ORCID's JSON media types; it answers XML to a missing or wildcard Accept (§1.1), which
# the emulator cannot, so it refuses those with 406 rather than hide a missing header.
JSON_TYPES = ("application/vnd.orcid+json", "application/orcid+json", "application/json")

_TRY_AGAIN = (
    "There was an error when updating the record. Please try again. If the error persists, "
    "please contact {clientName} for assistance."
)
# ORCID's texts (ORCID-Source orcid-core/src/main/resources/i18n/api_en.properties):
# error code -> (developer message, user message). OrcidCoreExceptionMapper appends
# " Full validation error: " and the exception's own message when it has one.
MESSAGES = {
    9001: (
        "400 Bad Request: There is an issue with your data or the API endpoint. 405 Method "
        "Not Allowed: Endpoint and method mismatch. 415 Unsupported Media Type: data must be "
        "in XML or JSON format.",
        "ORCID could not process the data, because they were invalid.",
    ),
    9006: (
        "The client application sent a bad request to ORCID.",
        "The client application sent a bad request to ORCID.",
    ),
    9007: (
        "301 Moved Permanently: This account is deprecated. Please refer to account: "
        "{primary}. ORCID {deprecated}",
        "This account is deprecated. Please refer to account: {primary}.",
    ),
    9010: (
        "403 Forbidden: You are not the source of the {activity}, so you are not allowed to "
        "update it.",
        "The client application is not the source of the resource it is trying to access.",
    ),
    9013: (
        "403 Forbidden: The item is private and you are not the source.",
        "The client application is forbidden to perform the action.",
    ),
    9016: ("404 Not Found: The resource was not found.", "The resource was not found."),
    9017: (
        "401 Unauthorized: The client application is not authorized for this ORCID record.",
        "The client application is not authorized.",
    ),
    9018: (
        "409 Conflict: The ORCID record is locked and cannot be edited. ORCID {orcid}",
        "The ORCID record is locked.",
    ),
    9019: (
        "400 Bad Request: The put code in the URL was {urlPutCode} whereas the one in the "
        "body was {bodyPutCode}.",
        _TRY_AGAIN,
    ),
    9021: (
        "409 Conflict: You have already added this activity (matched by external "
        "identifiers), please see element with put-code {putCode}. If you are trying to "
        "edit the item, please use PUT instead of POST.",
        _TRY_AGAIN,
    ),
    9024: (
        "400 Bad Request: Put-code is included when not expected. When posting new "
        "activities, the put code should be omitted.",
        _TRY_AGAIN,
    ),
    9035: (
        "403 Forbidden: You can't change the visibility of an item, please remove the "
        "visibility or set it to the current value.",
        _TRY_AGAIN,
    ),
    9038: (
        "409 Conflict: The item has a limited or private visibility and your request "
        "doesn't have the required scope.",
        "You don't have the permissions to execute this action.",
    ),
    9036: (
        "409 Conflict: This record has not been claimed.",
        "This record has not been claimed, if this is your record you can claim it at "
        "https://orcid.org/resend-claim.",
    ),
    9039: (
        "403 Forbidden: The item is not public and cannot be accessed with the Public API.",
        "The client application is forbidden to perform the action.",
    ),
    9044: (
        "409 Conflict: The ORCID record is deactivated and cannot be edited.",
        "The ORCID record is deactivated.",
    ),
    9045: (
        "400 Bad request: disambiguated-organization must be present and valid",
        "No valid disambiguated-organization is included in the data.",
    ),
    9046: (
        "400 Bad request: organization must be present and valid",
        "No valid organization is included in the data.",
    ),
    9049: ("400 Bad request: invalid date: {dateString} ", "Invalid date"),
    9055: (
        "400 Bad Request: End date must come after start date.",
        "End date must come after start date.",
    ),
    9061: (
        "City or region cannot be provided without a country for the organization address.",
        "City or region cannot be provided without a country for the organization address.",
    ),
    9062: (
        "Professional activities cannot be added without an organization id/external "
        "identifier. One has to be present.",
        "Professional activities cannot be added without an organization id/external "
        "identifier. One has to be present.",
    ),
}
# What Java's Long.valueOf accepts (PublicV3ApiServiceImplV3_0.viewQualification; its
# Character.digit takes any Unicode decimal digit, as Python's \d and int() do); anything
# else is a NumberFormatException, an IllegalArgumentException, which ORCID answers 400/9006.
_JAVA_LONG = re.compile(r"[+-]?\d+")
_LONG_MAX = 2**63 - 1


@bp.get("/<orcid>/qualifications")
def qualifications(orcid: str):
    persona, grant, mimetype, _ = _open_record(orcid, check_status=_api() != PUBLIC)
    items = [
        q
        for q in emulator().records.items(orcid)
        if _may_see(grant, orcid, q.visibility, q.source.client_id)
    ]
    body = record_json.qualifications(persona, items, emulator().fixtures.user_obo_clients)
    return _json(200, body, mimetype)


@bp.get("/<orcid>/qualification/<put_code>")
def qualification(orcid: str, put_code: str):
    persona, grant, mimetype, code = _open_record(
        orcid, check_status=_api() != PUBLIC, put_code=put_code
    )
    item = emulator().records.item(orcid, code)
    if item is None:
        abort(_error(404, 9016, mimetype))
    if not _may_see(grant, orcid, item.visibility, item.source.client_id):
        if _api() != PUBLIC and grant is not None and grant.may_read_limited(orcid):
            abort(_error(403, 9013, mimetype))
        abort(_error(403, 9039, mimetype))
    body = record_json.qualification(persona, item, emulator().fixtures.user_obo_clients)
    return _json(200, body, mimetype)


@bp.get("/<orcid>/person")
def person(orcid: str):
    # The Public API's viewPerson does check the status, unlike its qualification reads.
    persona, grant, mimetype, _ = _open_record(orcid, check_status=True)
    show_name = _may_see(grant, orcid, persona.name.visibility, None)
    return _json(200, record_json.person(persona, show_name=show_name), mimetype)


# --- writes (Member API) ------------------------------------------------------------------


@bp.post("/<orcid>/qualification")
def qualification_create(orcid: str):
    """Add a qualification: 201, an empty body and its URL in ``Location``."""
    persona, grant, client, mimetype, _, incoming = _open_for_write(orcid)
    store = emulator().records
    with store.writing:
        try:
            writes.check(incoming, create=True)
            _refuse_duplicate(incoming, orcid, grant.client_id)
            writes.check_organization_known(incoming)
        except writes.Refusal as refusal:
            abort(_refused(refusal, client, mimetype))
        item = writes.build(
            incoming,
            put_code=store.next_put_code(),
            source=Source(client_id=client.client_id, name=client.name),
            # setIncomingWorkPrivacy: a claimed record's default, whatever was sent.
            visibility=persona.default_visibility,
            created=dt.datetime.now(dt.UTC),
        )
        store.add(orcid, item)
    response = Response(status=201)
    del response.headers["Content-Type"]
    # ApiUtils.buildApiResponse: {api base}/v3.0/{orcid}/qualification/{put-code}.
    response.headers["Location"] = url_for(
        f"{_api()}.qualification", orcid=orcid, put_code=item.put_code, _external=True
    )
    return response


@bp.put("/<orcid>/qualification/<put_code>")
def qualification_update(orcid: str, put_code: str):
    """Replace one of this client's qualifications: 200 and the item as it now is."""
    persona, grant, client, mimetype, code, incoming = _open_for_write(orcid, put_code)
    store = emulator().records
    with store.writing:
        try:
            if incoming.put_code != code:
                raise writes.Refusal(
                    400,
                    9019,
                    urlPutCode=str(code),
                    bodyPutCode="null" if incoming.put_code is None else str(incoming.put_code),
                )
            existing = _own_item(orcid, code, grant.client_id)
            writes.check(incoming, create=False, original_visibility=existing.visibility)
            _refuse_duplicate(incoming, orcid, grant.client_id, put_code=code)
            writes.check_organization_known(incoming)
        except writes.Refusal as refusal:
            abort(_refused(refusal, client, mimetype))
        # updateAffiliation keeps the original source, visibility and creation date.
        item = writes.build(
            incoming,
            put_code=code,
            source=existing.source,
            visibility=existing.visibility,
            created=existing.created,
            modified=dt.datetime.now(dt.UTC),
        )
        store.replace(orcid, item)
    body = record_json.qualification(persona, item, emulator().fixtures.user_obo_clients)
    return _json(200, body, mimetype)


@bp.delete("/<orcid>/qualification/<put_code>")
def qualification_delete(orcid: str, put_code: str):
    """Delete one of this client's qualifications: 204."""
    _, grant, client, mimetype, code, _ = _open_for_write(orcid, put_code, with_body=False)
    store = emulator().records
    with store.writing:
        try:
            _own_item(orcid, code, grant.client_id)
        except writes.Refusal as refusal:
            abort(_refused(refusal, client, mimetype))
        store.delete(orcid, code)
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def _open_for_write(
    orcid: str, put_code: str | None = None, *, with_body: bool = True
) -> tuple[Persona, Grant, Client, str, int | None, writes.Incoming | None]:
    """The persona, grant, client, media type, put-code and body of a write, or abort.

    In ORCID's order: the token filter (no token 403, a dead one 401), Jersey's method,
    media type and body checks (405, 415, 400/9001), the put-code (9006), then the
    delegator's checkProfile (301, 409), isMyToken and checkClientType (401/9017) and
    the scope (403/9038; /activities/update covers affiliations).
    """
    mimetype = _negotiate()
    if _api() == PUBLIC:
        # The Public API has no write methods: Jersey answers 405 (a WebApplicationException,
        # which OrcidExceptionMapper turns into 9001 with its status).
        response = _error(405, 9001, mimetype, detail="HTTP 405 Method Not Allowed")
        response.headers["Allow"] = "GET, HEAD, OPTIONS"
        abort(response)
    grant = _bearer_grant()
    if grant is None:
        abort(_no_authentication())
    incoming = None
    if with_body:
        if request.mimetype not in JSON_TYPES:
            abort(_error(415, 9001, mimetype, detail="HTTP 415 Unsupported Media Type"))
        try:
            incoming = writes.read_body(request.get_data())
        except writes.Refusal as refusal:
            abort(_error(refusal.status, refusal.code, mimetype, detail=refusal.detail))
    code = None if put_code is None else _put_code(put_code, mimetype)
    persona = emulator().fixtures.persona(orcid)
    if persona is None or persona.orcid != orcid:
        abort(_error(404, 9016, mimetype))
    _check_status(persona, mimetype)
    client = emulator().fixtures.clients.get(grant.client_id)
    if client is None or not client.member:
        detail = "The client application is forbidden to perform the action."
        abort(_error(401, 9017, mimetype, detail=detail))
    if grant.orcid not in (None, orcid):
        abort(_error(401, 9017, mimetype, detail="Access token is for a different record"))
    if "/activities/update" not in grant.scopes:
        abort(_error(403, 9038, mimetype))
    return persona, grant, client, mimetype, code, incoming


def _own_item(orcid: str, put_code: int, client_id: str) -> Qualification:
    """The item, if this client is its source (checkSourceAndThrow).

    :raises writes.Refusal: 404/9016 when there is none; 403/9010 when another source
        added it (ORCID's message names a "work" whatever the item is).
    """
    item = emulator().records.item(orcid, put_code)
    if item is None:
        raise writes.Refusal(404, 9016)
    if item.source.client_id != client_id:
        raise writes.Refusal(403, 9010, activity="work")
    return item


def _refuse_duplicate(
    incoming: writes.Incoming, orcid: str, client_id: str, put_code: int | None = None
) -> None:
    items = emulator().records.items(orcid)
    duplicate = writes.duplicate_of(incoming, items, client_id, put_code)
    if duplicate is not None:
        raise writes.Refusal(409, 9021, putCode=str(duplicate.put_code))


def _refused(refusal: writes.Refusal, client: Client, mimetype: str) -> Response:
    return _error(
        refusal.status,
        refusal.code,
        mimetype,
        detail=refusal.detail,
        clientName=client.name,
        **refusal.params,
    )


def _no_authentication() -> Response:
    # No token on the Member API: Spring Security's entry point answers before any view
    # (APIAuthenticationEntryPoint).
    body = {
        "error": "forbidden",
        "error_description": "Forbidden: The server understood the request but refuses "
        "to authorize it.",
    }
    return Response(json.dumps(body), 403, mimetype="application/json")


def _api() -> str:
    """Which API this request reached: BLENDED, PUBLIC or MEMBER."""
    return request.blueprint


def _open_record(
    orcid: str, *, check_status: bool, put_code: str | None = None
) -> tuple[Persona, Grant | None, str, int | None]:
    """The persona, the caller's grant, the media type and the put-code (when the path has
    one), or abort with ORCID's error, checked in ORCID's order."""
    api = _api()
    grant = _bearer_grant()
    mimetype = _negotiate()
    if api == MEMBER and grant is None:
        abort(_no_authentication())
    # Jersey's resource method parses the put-code before the delegator looks at the record.
    code = None if put_code is None else _put_code(put_code, mimetype)
    persona = emulator().fixtures.persona(orcid)
    if persona is None or persona.orcid != orcid:
        abort(_error(404, 9016, mimetype))
    if api == BLENDED:
        _check_token_owner(grant, orcid, mimetype)
    if check_status:
        _check_status(persona, mimetype)
    if api == MEMBER:
        # The Member API checks the record's status before the token (checkProfileStatus,
        # then OrcidSecurityManagerImpl.checkAndFilter).
        _check_token_owner(grant, orcid, mimetype)
    return persona, grant, mimetype, code


def _check_status(persona: Persona, mimetype: str) -> None:
    """Abort as OrcidSecurityManagerImpl.checkProfile does, in its order."""
    orcid = persona.orcid
    if persona.status == "deprecated":
        params = {
            "primary": record_json.person_uri(persona.primary),
            "deprecated": record_json.person_uri(orcid),
        }
        response = _error(301, 9007, mimetype, **params)
        response.headers["Location"] = url_for(
            request.endpoint, **{**request.view_args, "orcid": persona.primary}, _external=True
        )
        abort(response)
    if persona.status == "unclaimed":
        abort(_error(409, 9036, mimetype))
    if persona.status == "locked":
        # LockedException(orcid + " is locked"), its ${orcid} the bare iD.
        abort(_error(409, 9018, mimetype, detail=f"{orcid} is locked", orcid=orcid))
    if persona.status == "deactivated":
        abort(_error(409, 9044, mimetype, detail=f"{orcid} is deactivated"))


def _check_token_owner(grant: Grant | None, orcid: str, mimetype: str) -> None:
    """A researcher's token reads only their own record (isMyToken); on the Member API a
    public client's token reads nothing (checkClientType)."""
    if grant is None:
        return
    if _api() == MEMBER:
        client = emulator().fixtures.clients.get(grant.client_id)
        if client is None or not client.member:
            detail = "The client application is forbidden to perform the action."
            abort(_error(401, 9017, mimetype, detail=detail))
    if grant.orcid not in (None, orcid):
        abort(_error(401, 9017, mimetype, detail="Access token is for a different record"))


def _put_code(raw: str, mimetype: str) -> int:
    """The put-code as ORCID parses it, or abort with 400/9006."""
    value = int(raw) if _JAVA_LONG.fullmatch(raw) else None
    if value is None or not -_LONG_MAX - 1 <= value <= _LONG_MAX:
        abort(_error(400, 9006, mimetype, detail=f'For input string: "{raw}"'))
    return value


def _bearer_grant() -> Grant | None:
    """The grant behind the request's token; None when the request is anonymous.

    As OrcidBearerTokenFilter reads it: the ``Authorization: Bearer`` header, else the
    ``access_token`` query parameter; a blank token is no token (the request goes on
    anonymously), while a token that is not live is refused with 401.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        token = token.split(",")[0].strip()
    else:
        token = request.args.get("access_token", "").strip()
    if not token:
        return None
    grant = emulator().tokens.grant_for(token)
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
    if _api() == PUBLIC or grant is None or not grant.may_read_limited(orcid):
        return False  # the Public API shows public items to every token alike
    # ORCID shows a private item only to the client that is its source.
    return visibility == "limited" or (
        source_client is not None and source_client == grant.client_id
    )


def _error(status: int, code: int, mimetype: str, *, detail: str | None = None, **params):
    """ORCID's error body for ``code``, with ``detail`` as the exception's message."""
    developer, user = (text.format(**params) for text in MESSAGES[code])
    if detail is not None:
        developer += f" Full validation error: {detail}"
    return _json(status, record_json.error(status, code, developer, user), mimetype)


def _json(status: int, body: dict, mimetype: str) -> Response:
    return Response(json.dumps(body), status, mimetype=mimetype)
