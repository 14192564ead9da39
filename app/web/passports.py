"""GA4GH Passports: the researcher's visas (``/ga4gh/passport``) and our keys (JWKS).

A signed-in researcher (browser session) or a token holder (``Authorization: Bearer``,
a personal access token) gets ``{"ga4gh_passport_v1": [visa, ...]}``, minted now from
the decisions in force (app/passports.py); a browser sees each visa decoded beside its
raw JWS. A token's passport holds grants only for the datasets the token opens.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

from flask import Blueprint, Response, current_app, render_template, request, url_for

from app.orcid_client import reads_ending_by
from app.passports import JWKS_PATH, VisaSettings, decode_unverified, visa_claims
from app.web.clients import limited_address
from app.web.forward_auth import accepts_html, token_of
from app.web.login import current_researcher

logger = logging.getLogger(__name__)
bp = Blueprint("passports", __name__)


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def _json(data, status: int = 200, **headers) -> Response:
    response = Response(
        json.dumps(data, separators=(",", ":")), status, mimetype="application/json"
    )
    response.headers.update(headers)
    return response


@bp.app_context_processor
def _passport_helpers():
    return {"passports_enabled": _gatekeeper().visa_signer is not None}


@bp.get(JWKS_PATH)
def jwks():
    """Our public keys: the signing key and any older one still published."""
    signer = _gatekeeper().visa_signer
    keys = signer.jwks() if signer is not None else {"keys": []}
    # A clearinghouse may keep them a little while; a rotation publishes both keys first.
    response = _json(keys)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/ga4gh/passport")
def passport():
    """The visas of the researcher this request is for, signed now.

    :raise 401: no session and no valid token. :raise 404: no signing key is set.
    """
    gk = _gatekeeper()
    if gk.visa_signer is None:
        return _json({"error": "not_configured", "message": "this service issues no visas"}, 404)
    who = _who()
    if who is None:
        return _json(
            {"error": "unauthorized", "message": "sign in, or send a personal access token"},
            401,
            **{"WWW-Authenticate": 'Bearer realm="orcid-gatekeeper"'},
        )
    orcid, orcid_token, datasets, not_after = who
    policy = gk.checker.policy
    keys = [key for key in policy.datasets if datasets is None or key in datasets]
    settings = gk.settings
    # Every dataset's ORCID read ends by one deadline: in turn, each with its own
    # ORCID_TIMEOUT, a hung ORCID would hold the answer for that many times over.
    with reads_ending_by(time.monotonic() + settings.orcid_timeout):
        decisions = [gk.checker.check(orcid, key, token=orcid_token) for key in keys]
    issuer = (settings.public_url or request.host_url).rstrip("/")
    claims = visa_claims(
        policy,
        decisions,
        orcid=orcid,
        settings=VisaSettings(issuer, settings.orcid_base_url, settings.visa_lifetime),
        cache_until=gk.checker.cache_until,
        now=dt.datetime.now(dt.UTC),
        not_after=not_after,
    )
    jku = issuer + JWKS_PATH
    visas = [gk.visa_signer.sign(claim, jku) for claim in claims]
    logger.info(
        "passport issued",
        extra={
            "event": "passport",
            "orcid": orcid,
            "visas": [c["ga4gh_visa_v1"]["type"] for c in claims],
        },
    )
    if _wants_page():
        shown = [(visa, *decode_unverified(visa)) for visa in visas]
        return render_template(
            "passport.html",
            visas=shown,
            json_url=url_for("passports.passport", format="json"),
            when=lambda seconds: dt.datetime.fromtimestamp(seconds, dt.UTC).strftime(
                "%Y-%m-%d %H:%M:%S UTC"
            ),
        )
    response = _json({"ga4gh_passport_v1": visas})
    response.headers["Cache-Control"] = "no-store"
    return response


def _who() -> tuple[str, str | None, tuple[str, ...] | None, float | None] | None:
    """(iD, an ORCID token to read their record with, the datasets allowed, when the
    credential ends (a token's expiry, or a session's end)), or None."""
    gk = _gatekeeper()
    credentials = request.headers.get("Authorization")
    if credentials is not None:
        address = limited_address(request.environ, gk.settings.forwarded_allow_ips)
        if gk.token_failures.blocks(address):
            return None
        token = token_of(credentials)
        record = gk.access_tokens.verify(token) if token else None
        if record is None:
            gk.token_failures.failed(address)
            return None
        orcid_token = gk.store.session_token_of(record.orcid)
        return record.orcid, orcid_token, record.datasets, record.expires
    researcher = current_researcher()
    if researcher is None:
        return None
    return researcher.orcid, researcher.token, None, researcher.expires


def _wants_page() -> bool:
    return request.args.get("format") != "json" and accepts_html(request.headers.get("Accept"))
