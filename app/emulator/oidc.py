"""OpenID Connect as ORCID serves it: discovery, the JWKS and /oauth/userinfo.

The issuer is the emulator's base URL as the request reached it (ORCID's is
``https://orcid.org``), so discovery, the ``iss`` claim and the endpoints agree on any
port. The ID tokens themselves are made in id_tokens.py.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from app.emulator.id_tokens import ALGORITHM, name_claims
from app.emulator.state import emulator

bp = Blueprint("oidc", __name__)


def issuer() -> str:
    """The emulator's base URL as this request reached it, ORCID's ``issuer``."""
    return request.url_root.rstrip("/")


@bp.get("/.well-known/openid-configuration")
def discovery():
    """ORCID's discovery document: the same 14 fields, under the emulator's base URL."""
    base = issuer()
    return _json(
        200,
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/oauth/jwks",
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": ["family_name", "given_name", "name", "auth_time", "iss", "sub"],
            "scopes_supported": ["openid"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code", "id_token", "id_token token"],
            "claims_parameter_supported": False,
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token"],
        },
    )


@bp.get("/oauth/jwks")
def jwks():
    return _json(200, emulator().id_tokens.jwks())


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo():
    """The signed-in researcher's iD and public name, for an /authenticate or openid token.

    :raise 403: ``access_denied`` for a missing, unknown or revoked token, or one without
        either scope, as ORCID's OpenIDController answers all of them.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    grant = emulator().tokens.grant_for(token) if scheme.lower() == "bearer" and token else None
    persona = emulator().fixtures.persona(grant.orcid) if grant and grant.orcid else None
    if persona is None or not grant.scopes & {"/authenticate", "openid"}:
        # ORCID's key really is hyphenated here, unlike its other OAuth errors.
        body = {"error": "access_denied", "error-description": "access_token is invalid"}
        return _json(403, body)
    # OpenIDConnectUserInfo: every field, nulls included, in this order; "name" is the
    # credit name only.
    body = {"id": f"{issuer()}/{persona.orcid}", "sub": persona.orcid, **name_claims(persona)}
    return _json(200, body)


def _json(status: int, body: dict) -> Response:
    # json.dumps keeps the order ORCID writes its fields in; Flask's jsonify sorts them.
    return Response(json.dumps(body), status, mimetype="application/json")
