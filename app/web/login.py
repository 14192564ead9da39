"""Sign-in with ORCID (Authlib does every OAuth step), sessions, sign-out.

The browser holds a signed session cookie with the researcher's iD and a session id;
the researcher's ORCID access token stays server-side in the store, under that id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from authlib.oidc.core import CodeIDToken
from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from joserfc.errors import InvalidClaimError, JoseError
from requests import RequestException

from app.cache import session_record, session_token
from app.errors import InvalidOrcidId
from app.orcid_id import parse_orcid_id
from app.web.redirects import safe_next

logger = logging.getLogger(__name__)
bp = Blueprint("login", __name__)
oauth = OAuth()


@dataclass(frozen=True, slots=True)
class Researcher:
    orcid: str
    name: str | None
    sid: str
    token: str | None  # the ORCID access token, from the server-side session
    # How ORCID says the researcher signed in ("pwd", "mfa"), from a verified ID token;
    # empty without openid or for a public client (ORCID sends amr to members only).
    amr: tuple[str, ...] = ()


def init_app(app):
    """Register ORCID as an OAuth provider with URLs from the settings."""
    settings = app.extensions["gatekeeper"].settings
    base = settings.orcid_base_url.rstrip("/")
    kwargs = {
        "client_id": settings.orcid_client_id,
        "client_secret": settings.orcid_client_secret,
        "authorize_url": f"{base}/oauth/authorize",
        "access_token_url": f"{base}/oauth/token",
        "client_kwargs": {
            "scope": settings.orcid_scope,
            "token_endpoint_auth_method": "client_secret_post",
            "default_timeout": 10,
        },
    }
    if "openid" in settings.orcid_scope.split():
        # Authlib then checks the ID token: issuer, audience, signature (JWKS), nonce;
        # callback() passes ORCID's form of amr and checks at_hash.
        kwargs["server_metadata_url"] = f"{base}/.well-known/openid-configuration"
    oauth.init_app(app)
    oauth.register("orcid", overwrite=True, **kwargs)


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def allowed_hosts() -> frozenset[str]:
    settings = _gatekeeper().settings
    hosts = set(settings.allowed_redirect_hosts)
    if settings.public_url:
        from urllib.parse import urlsplit

        hosts.add(urlsplit(settings.public_url).netloc.lower())
    return frozenset(hosts)


def redirect_uri() -> str:
    public = _gatekeeper().settings.public_url
    if public:
        return public.rstrip("/") + "/callback"
    return url_for("login.callback", _external=True)


def current_researcher() -> Researcher | None:
    """The signed-in researcher, or None (no cookie, a tampered one, or signed out).

    Asked once per request (pages and the layout both want it): one store read.
    """
    if "researcher" not in g:
        g.researcher = _researcher_from_session()
    return g.researcher


def _researcher_from_session() -> Researcher | None:
    data = session.get("researcher")
    if not isinstance(data, dict):
        return None
    try:
        orcid = parse_orcid_id(data.get("orcid", ""))
    except InvalidOrcidId:
        return None
    sid = data.get("sid")
    if not isinstance(sid, str):
        return None
    stored = _gatekeeper().store.get_session(sid)
    if stored is None:
        return None  # signed out, or expired server-side
    amr = data.get("amr")
    amr = tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else ()
    return Researcher(orcid, data.get("name"), sid, session_token(stored), amr)


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok() -> bool:
    sent = request.form.get("csrf", "").encode("utf-8")
    expected = str(session.get("csrf", "")).encode("utf-8")
    return bool(expected) and hmac.compare_digest(sent, expected)


def sign_in_url() -> str:
    """The sign-in link for this page: back here afterwards, unless here is sign-in itself."""
    if request.blueprint == "pages" and request.method == "GET":
        return url_for("login.login", next=request.path)
    remembered = session.get("next")  # a sign-in that was cancelled or failed
    return url_for("login.login", next=remembered) if remembered else url_for("login.login")


@bp.app_context_processor
def _template_helpers():
    return {"csrf_token": csrf_token, "researcher": current_researcher, "sign_in_url": sign_in_url}


@bp.get("/login")
def login():
    """Send the researcher to ORCID to sign in; ``next`` is where to return to."""
    session["next"] = safe_next(request.args.get("next"), allowed_hosts())
    return oauth.orcid.authorize_redirect(redirect_uri())


@bp.get("/callback")
def callback():
    """ORCID sends the researcher back here with a code (or an error) and our state.

    :raise 400: a wrong, missing or replayed state, or a code ORCID refuses.
    """
    if request.args.get("error"):
        # The researcher pressed Deny at ORCID: no session, a page that says so.
        for key in [k for k in session if k.startswith("_state_orcid_")]:
            session.pop(key)
        return render_template("denied.html"), 200
    settings = _gatekeeper().settings
    try:
        token = oauth.orcid.authorize_access_token(
            claims_options=_id_token_claims(settings), claims_cls=OrcidIDToken
        )
        if "userinfo" in token:
            _check_at_hash(token["userinfo"], token.get("access_token"))
    except JoseError as exc:
        # An ID token that fails verification: wrong signature, issuer, audience, nonce,
        # at_hash or amr, or expired. Authlib checks them with joserfc, whose errors are
        # its own.
        logger.warning("ID token refused: %s", type(exc).__name__)
        return _sign_in_failed("ORCID's answer could not be verified.", 400)
    except AuthlibBaseError as exc:
        logger.info("sign-in refused: %s", getattr(exc, "error", type(exc).__name__))
        return _sign_in_failed("This sign-in link has expired or was already used.", 400)
    except RequestException:
        logger.warning("ORCID token endpoint unreachable")
        return _sign_in_failed(
            "ORCID did not answer; please try again in a few minutes.",
            502,
            title="ORCID is not answering",
        )
    try:
        orcid = parse_orcid_id(str(token.get("orcid") or token.get("userinfo", {}).get("sub")))
    except InvalidOrcidId:
        logger.warning("ORCID token answer carried no valid iD")
        return _sign_in_failed("ORCID did not tell us your iD.", 502)
    if "openid" in settings.orcid_scope.split() and "userinfo" not in token:
        logger.warning("openid requested but no ID token came back")
        return _sign_in_failed("ORCID's answer could not be verified.", 502)
    next_url = session.pop("next", "/")
    amr = authentication_methods(token.get("userinfo", {}).get("amr"))
    if not start_session(orcid, token.get("name") or None, token.get("access_token"), amr=amr):
        return _sign_in_failed("We cannot keep you signed in just now.", 503)
    return redirect(safe_next(next_url, allowed_hosts()))


def _sign_in_failed(reason: str, status: int, title: str = "Sign-in did not complete"):
    """A page that says why sign-in stopped, with a way to start again; no session."""
    return render_template(
        "message.html",
        title=title,
        message=f"{reason} Please start again.",
        action=("Sign in with ORCID", sign_in_url()),
    ), status


def _id_token_claims(settings) -> dict:
    """What an ID token must say, beyond Authlib's own checks (signature, nonce, expiry).

    NOTE: Authlib compares ``aud`` with our client only through ``azp``, which ORCID does
    not send, so the audience is pinned here, and the issuer with it.
    """
    return {
        "iss": {"essential": True, "values": [settings.orcid_base_url.rstrip("/")]},
        "aud": {"essential": True, "values": [settings.orcid_client_id]},
    }


class OrcidIDToken(CodeIDToken):
    """An ID token from a code exchange, with ``amr`` as ORCID writes it.

    For member clients ORCID's ``amr`` is one string, ``"pwd"`` or ``"mfa"``
    (ORCID-Source OpenIDConnectTokenEnhancer; orcid-web/ORCID_AUTH_WITH_OPENID_CONNECT.md),
    where OIDC Core and Authlib's ``IDToken.validate_amr`` want a list (authlib#725).
    Every other check is Authlib's, except ``at_hash``: see ``_check_at_hash``.
    """

    def validate_amr(self):
        amr = self.get("amr")
        if amr is None or (isinstance(amr, str) and amr):
            return
        if isinstance(amr, list) and all(isinstance(m, str) and m for m in amr):
            return
        raise InvalidClaimError("amr")


def authentication_methods(amr) -> tuple[str, ...]:
    """A verified ``amr`` claim (one string, a list, or absent) as a tuple of methods."""
    if isinstance(amr, str):
        return (amr,)
    if isinstance(amr, list):
        return tuple(amr)
    return ()


def _check_at_hash(claims, access_token: str | None) -> None:
    """The ID token's ``at_hash`` must be the hash of the access token it came with.

    NOTE: Authlib checks ``at_hash`` only when it picks the claims class itself; given
    ``claims_cls`` it no longer passes the access token (``parse_id_token``), so it is
    checked here. As Authlib does, a token without ``at_hash`` passes. SHA-256 because ID
    tokens are RS256 (ORCID's discovery; OIDC Core 3.1.3.6: the left half, base64url).

    :raises InvalidClaimError: when the hash does not match, or there is no access token.
    """
    at_hash = claims.get("at_hash")
    if at_hash is None:
        return
    if not isinstance(at_hash, str) or not access_token:
        raise InvalidClaimError("at_hash")
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    expected = base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
    if not hmac.compare_digest(at_hash.encode("utf-8"), expected.encode("ascii")):
        raise InvalidClaimError("at_hash")


def start_session(
    orcid: str, name: str | None, access_token: str | None, *, amr: tuple[str, ...] = ()
) -> bool:
    """A fresh session id (no fixation), the token kept server-side, never in the cookie.

    ``amr`` (how the researcher signed in at ORCID) goes in the signed cookie, so a check
    that needs it costs no store read. False, and no session, when the store (Redis)
    could not keep it.
    """
    gk = _gatekeeper()
    session.clear()
    sid = secrets.token_urlsafe(24)
    if not gk.store.put_session(
        sid, session_record(orcid, access_token), gk.settings.session_lifetime
    ):
        logger.warning("sign-in refused: the session store is unavailable")
        return False
    session.permanent = True
    session["researcher"] = {"orcid": orcid, "name": name, "sid": sid, "amr": list(amr)}
    logger.info("signed in", extra={"orcid": orcid})
    return True


@bp.get("/logout")
def logout_page():
    return render_template("logout.html")


@bp.post("/logout")
def logout():
    """End the session; the form's CSRF token must match the session's."""
    if not csrf_ok():
        return render_template(
            "message.html",
            title="Please try again",
            message="That sign-out form had expired.",
            action=("Sign out", url_for("login.logout_page")),
        ), 400
    researcher = session.get("researcher")
    if isinstance(researcher, dict) and isinstance(researcher.get("sid"), str):
        if not _gatekeeper().store.delete_session(researcher["sid"]):
            # Keep the cookie, so the researcher can try again: saying "signed out" while
            # the session lives on server-side would be a lie.
            return render_template(
                "message.html",
                title="Could not sign you out",
                message="We could not end your session just now. Please try again in a minute.",
                action=("Sign out", url_for("login.logout_page")),
            ), 503
    session.clear()
    return render_template(
        "message.html",
        title="Signed out",
        message="You are signed out of the gatekeeper.",
        action=("Home", url_for("pages.index")),
    )
