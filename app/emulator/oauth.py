"""ORCID's OAuth endpoints: the consent page at /oauth/authorize, /oauth/token, /oauth/revoke.

PKCE (RFC 7636) is optional, as it is at ORCID: an authorize request may send a
``code_challenge`` with ``code_challenge_method=S256`` (the only method), and then the
code is exchanged only with the matching ``code_verifier``.

Emulator-only shortcut for automated tests: ``GET /oauth/authorize?...&persona=<key or
iD>&decision=authorize`` (or ``decision=deny``) answers as if that persona had clicked
the button, without showing the page.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import replace
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, redirect, render_template, request

from app.emulator.oidc import issuer
from app.emulator.personas import Client
from app.emulator.state import emulator
from app.emulator.tokens import S256_CHALLENGE, Grant

bp = Blueprint("oauth", __name__, url_prefix="/oauth")

EXPIRES_IN = 631138518  # about 20 years: ORCID's lifetime for 3-legged and 2-step tokens
FORM = "application/x-www-form-urlencoded"

# The scopes a researcher can grant at /oauth/authorize, as ORCID describes them.
SCOPES = {
    "/authenticate": "Get your ORCID iD",
    "openid": "Get your ORCID iD",
    "/read-limited": "Read your information with visibility set to Trusted Organizations",
    "/activities/update": "Add/update your research activities (works, affiliations, etc)",
    "/person/update": "Add/update other information about you (country, keywords, etc.)",
}
MEMBER_ONLY_SCOPES = frozenset({"/read-limited", "/activities/update", "/person/update"})


@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    """Show the consent page (GET), or act on the researcher's choice (POST or shortcut)."""
    params = request.values  # the query string on GET; the form and query string on POST
    fixtures = emulator().fixtures
    client = fixtures.clients.get(params.get("client_id", ""))
    # Without a known client and its registered redirect URI there is nowhere safe to
    # send an error, so these two answer here instead of redirecting.
    if client is None:
        return _oauth_error(400, "invalid_request", "Invalid client_id")
    redirect_uri = params.get("redirect_uri", "")
    if not client.accepts_redirect(redirect_uri):
        return _oauth_error(400, "invalid_request", "Invalid redirect_uri: not registered")
    state = params.get("state")
    if params.get("response_type") != "code":
        return _back(
            redirect_uri,
            error="unsupported_response_type",
            error_description="Only response_type=code is supported",
            state=state,
        )
    scope = " ".join(params.get("scope", "").split())
    problem = _scope_problem(scope, client)
    if problem:
        return _back(redirect_uri, error="invalid_scope", error_description=problem, state=state)

    challenge = params.get("code_challenge")
    if challenge is not None or params.get("code_challenge_method") is not None:
        if params.get("code_challenge_method") != "S256":
            return _back(
                redirect_uri,
                error="invalid_request",
                error_description="code_challenge_method must be S256",
                state=state,
            )
        if not S256_CHALLENGE.fullmatch(challenge or ""):
            return _back(
                redirect_uri,
                error="invalid_request",
                error_description="Invalid code_challenge",
                state=state,
            )

    decision = params.get("decision")
    if decision == "deny":
        return _back(
            redirect_uri, error="access_denied", error_description="User denied access", state=state
        )
    if decision == "authorize":
        persona = fixtures.persona(params.get("persona", ""))
        if persona is None:
            return _oauth_error(400, "invalid_request", "Unknown persona")
        grant = Grant(
            client.client_id,
            scope,
            orcid=persona.orcid,
            redirect_uri=redirect_uri,
            nonce=params.get("nonce"),
            auth_time=int(time.time()),
            code_challenge=challenge,
        )
        return _back(redirect_uri, code=emulator().tokens.issue_code(grant), state=state)
    if decision is not None:
        return _oauth_error(400, "invalid_request", "decision must be authorize or deny")
    return render_template(
        "authorize.html",
        client=client,
        scopes=list(dict.fromkeys(SCOPES[s] for s in scope.split())),  # openid = /authenticate
        personas=fixtures.personas,
        selected=params.get("persona"),
        hidden={
            k: params[k]
            for k in (
                "client_id",
                "response_type",
                "scope",
                "redirect_uri",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
            )
            if k in params
        },
    )


@bp.post("/token")
def token():
    """Exchange a code (or client credentials) for a token, as ORCID answers it."""
    if request.mimetype != FORM:
        return _oauth_error(415, "invalid_request", f"Content-Type must be {FORM}")
    client = _authenticated_client()
    if client is None:
        return _oauth_error(401, "invalid_client", "Client authentication failed")
    grant_type = request.form.get("grant_type")
    if grant_type == "authorization_code":
        return _exchange_code(client)
    if grant_type == "client_credentials":
        return _client_credentials(client)
    if grant_type == "refresh_token":
        return _refresh(client)
    detail = f"Unsupported grant type: {grant_type}" if grant_type else "Missing grant type"
    return _oauth_error(400, "unsupported_grant_type", detail)


@bp.post("/revoke")
def revoke():
    """Revoke one of the client's access or refresh tokens (the pair goes together).

    Answers 200 with an empty body, also for a token that is unknown or already revoked,
    as RFC 7009 asks, so a client cannot probe for tokens.

    :raise 401: ``invalid_client`` when the client id or secret is wrong.
    :raise 400: ``invalid_request`` when there is no token.
    """
    if request.mimetype != FORM:
        return _oauth_error(415, "invalid_request", f"Content-Type must be {FORM}")
    client = _authenticated_client()
    if client is None:
        return _oauth_error(401, "invalid_client", "Client authentication failed")
    token = request.form.get("token", "").strip()
    if not token:
        return _oauth_error(400, "invalid_request", "Missing token")
    emulator().tokens.revoke(token=token, client_id=client.client_id)
    return Response(status=200)


def _authenticated_client() -> Client | None:
    """The client named in the form if its secret matches (client_secret_post)."""
    client = emulator().fixtures.clients.get(request.form.get("client_id", ""))
    secret = request.form.get("client_secret", "").encode()
    if client is None or not hmac.compare_digest(client.client_secret.encode(), secret):
        return None
    return client


def _exchange_code(client: Client) -> Response:
    code = request.form.get("code")
    if not code:
        return _oauth_error(400, "invalid_request", "Missing authorization code")
    grant = emulator().tokens.redeem_code(
        code,
        client.client_id,
        request.form.get("redirect_uri"),
        request.form.get("code_verifier"),
    )
    if grant is None:
        # Unknown, spent, expired, another client's, redirect_uri differs, or the PKCE
        # verifier is missing or wrong: ORCID answers all of these alike.
        return _oauth_error(400, "invalid_grant", f"Invalid authorization code: {code}")
    persona = emulator().fixtures.persona(grant.orcid)
    access_token, refresh_token = emulator().tokens.issue_token(grant)
    public_name = persona.name.display if persona.name.visibility == "public" else None
    body = {
        "access_token": access_token,
        "token_type": "bearer",
        "refresh_token": refresh_token,
        "expires_in": EXPIRES_IN,
        "scope": grant.scope,
        "name": public_name,
        "orcid": grant.orcid,
    }
    if "openid" in grant.scopes:
        body["id_token"] = emulator().id_tokens.issue(
            grant, access_token, persona, issuer(), member=client.member
        )
    return _json(200, body)


def _refresh(client: Client) -> Response:
    """A new token pair from a refresh token (ORCID-Source tutorial/refresh_tokens.md).

    ``scope`` may narrow the scopes, ``expires_in`` shorten the life, and
    ``revoke_old=true`` revokes the token pair the refresh token belonged to; otherwise
    the old access token stays live. There is no ID token in the answer.
    """
    tokens = emulator().tokens
    refresh_token = request.form.get("refresh_token", "").strip()
    if not refresh_token:
        return _oauth_error(400, "invalid_request", "Missing refresh token")
    found = tokens.grant_for_refresh(refresh_token, client.client_id)
    if found is None:
        # Unknown, revoked, or another client's: alike, and never echoed whole.
        shown = refresh_token[:8] + "..." if len(refresh_token) > 8 else refresh_token
        return _oauth_error(400, "invalid_grant", f"Invalid refresh token: {shown}")
    old_access, grant = found
    scope = " ".join(request.form.get("scope", "").split()) or grant.scope
    if not set(scope.split()) <= grant.scopes:
        return _oauth_error(400, "invalid_scope", f"Invalid scope: {scope}")
    expires_in = request.form.get("expires_in", "").strip() or str(EXPIRES_IN)
    if (
        not expires_in.isascii()
        or not expires_in.isdigit()
        or not 0 < int(expires_in) <= EXPIRES_IN
    ):
        return _oauth_error(400, "invalid_request", f"Invalid expires_in: {expires_in}")
    if request.form.get("revoke_old", "").strip().lower() == "true":
        tokens.revoke(token=old_access, client_id=client.client_id)
    access_token, new_refresh = tokens.issue_token(replace(grant, scope=scope))
    body = {
        "access_token": access_token,
        "token_type": "bearer",
        "refresh_token": new_refresh,
        "expires_in": int(expires_in),
        "scope": scope,
    }
    if grant.orcid is not None:
        persona = emulator().fixtures.persona(grant.orcid)
        body["name"] = persona.name.display if persona.name.visibility == "public" else None
    body["orcid"] = grant.orcid
    return _json(200, body)


def _client_credentials(client: Client) -> Response:
    scope = " ".join(request.form.get("scope", "/read-public").split())
    if scope != "/read-public":
        return _oauth_error(400, "invalid_scope", f"Invalid scope: {scope}")
    access_token, refresh_token = emulator().tokens.issue_token(Grant(client.client_id, scope))
    # A 2-step token belongs to no researcher: "orcid" is null and there is no "name".
    return _json(
        200,
        {
            "access_token": access_token,
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "expires_in": EXPIRES_IN,
            "scope": scope,
            "orcid": None,
        },
    )


def _scope_problem(scope: str, client: Client) -> str | None:
    if not scope:
        return "Missing scope"
    for name in scope.split():
        if name not in SCOPES:
            return f"Invalid scope: {name}"
        if name in MEMBER_ONLY_SCOPES and not client.member:
            return f"Invalid scope: {name} needs a member client"
    return None


def _back(redirect_uri: str, **params) -> Response:
    """Redirect to the client with ``params`` added to its redirect URI's query."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return redirect(urlunsplit(parts._replace(query=urlencode(query))), 302)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _json(status: int, body: dict) -> Response:
    response = Response(json.dumps(body), status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
