"""Sign-in with ORCID (Authlib does every OAuth step), sessions, sign-out, disconnect.

The browser holds a signed session cookie with the researcher's iD and a session id;
the researcher's ORCID access token stays server-side in the store, under that id.
OAuth ``state`` lives server-side too (with the PKCE verifier and the nonce): the
cookie carries only a marker for each of the last few sign-ins started, so it does not
grow with each /login, and each state can be used once.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App, OAuth
from authlib.oidc.core import CodeIDToken
from authlib.oidc.core.util import create_half_hash
from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from joserfc import jws
from joserfc.errors import InvalidClaimError, JoseError
from requests import RequestException

from app.cache import (
    UNAVAILABLE,
    NotReplicated,
    session_belongs_to,
    session_expires,
    session_record,
    session_token,
)
from app.errors import InvalidOrcidId, MalformedResponse
from app.http_deadlines import DeadlineOAuth2Session, ending_by
from app.metrics import SIGN_INS
from app.orcid_id import parse_orcid_id
from app.settings import is_loopback_host
from app.web.clients import limited_address
from app.web.redirects import safe_next

logger = logging.getLogger(__name__)
bp = Blueprint("login", __name__)

STATE_TTL = 600  # seconds a sign-in may take at ORCID before its state is forgotten
# Sign-ins started (in other tabs, say) whose callbacks still count; older ones are
# dropped, which is what keeps the pre-login cookie from growing with each /login.
MAX_PENDING = 3
# Seconds for a callback's whole exchange with ORCID (the code for a token; with openid,
# the discovery document and signing keys too): a person waits on it.
EXCHANGE_BUDGET = 10.0
REVOKE_TIMEOUT = 5.0  # seconds per token revocation at ORCID
REVOKE_BUDGET = 10.0  # seconds for all of a researcher's tokens together


class StoreUnavailable(Exception):
    """The store cannot keep or give back a sign-in's state (Redis is down)."""


class StateCache:
    """Authlib's cache for sign-in states, backed by this app's store.

    NOTE: ``get`` takes the state out (Redis GETDEL): Authlib reads a state once per
    callback and deletes it afterwards, and between the two a second callback with the
    same state (a replay, or a second code) could read it too.
    """

    @staticmethod
    def _store():
        return current_app.extensions["gatekeeper"].store

    def get(self, key: str) -> str | None:
        """:raises StoreUnavailable: while Redis is down (not "no such state")."""
        found = self._store().take_state(key)
        if found is UNAVAILABLE:
            raise StoreUnavailable()
        return found

    def peek(self, key: str) -> str | None:
        """Like ``get``, but the state stays."""
        found = self._store().peek_state(key)
        if found is UNAVAILABLE:
            raise StoreUnavailable()
        return found

    def set(self, key: str, value: str, timeout: float) -> None:
        if not self._store().put_state(key, value, timeout):
            raise StoreUnavailable()

    def delete(self, key: str) -> None:
        self._store().delete_state(key)


class ServerSideState(FlaskIntegration):
    """Authlib's Flask integration, with the state's data kept in the store.

    The cookie keeps a marker per state (which binds the callback to the browser that
    started the sign-in), for at most ``MAX_PENDING`` states; the store keeps the state's
    data and the address the sign-in started at, so that a callback arriving at another
    host can say so.
    """

    expires_in = STATE_TTL

    def set_state_data(self, session, state, data):
        prefix = f"_state_{self.name}_"
        pending = sorted(
            (key for key in session if key.startswith(prefix)),
            key=lambda key: _expiry(session[key]),
        )
        for key in pending[: max(0, len(pending) - MAX_PENDING + 1)]:
            session.pop(key)
            self.cache.delete(key)
        stored = {"data": data, "started_at": request.host_url}
        self.cache.set(prefix + state, json.dumps(stored), self.expires_in)
        # To the microsecond: markers are pruned oldest first, and the cookie keeps them
        # in key order (Flask sorts), not in the order they were made.
        session[prefix + state] = {"exp": round(time.time() + self.expires_in, 6)}

    def clear_state_data(self, session, state):
        # Authlib clears a callback's state before it checks it: a browser that holds no
        # marker for the state (someone else's callback) must not spend that sign-in.
        if self.started_here(session, state):
            super().clear_state_data(session, state)

    def started_here(self, session, state: str) -> bool:
        """Whether this browser started the sign-in with ``state`` (its cookie holds the
        state's marker)."""
        return f"_state_{self.name}_{state}" in session

    def started_at(self, state: str) -> str | None:
        """Where the sign-in with ``state`` started, or None. The state stays: this browser
        holds no marker for it, and another's callback must not spend it."""
        raw = self.cache.peek(f"_state_{self.name}_{state}")
        try:
            started_at = json.loads(raw).get("started_at") if raw else None
        except (TypeError, ValueError, AttributeError):
            return None
        return started_at if isinstance(started_at, str) else None


def _expiry(marker) -> float:
    return marker.get("exp", 0) if isinstance(marker, dict) else 0


class _OrcidApp(FlaskOAuth2App):
    client_cls = DeadlineOAuth2Session  # its exchanges end within an ending_by() deadline


class _OAuth(OAuth):
    framework_integration_cls = ServerSideState
    oauth2_client_cls = _OrcidApp


def redirect_to_orcid(**kwargs):
    """The redirect to ORCID's authorize page; with openid, after ORCID's discovery
    document (read once per worker), within ``EXCHANGE_BUDGET``.

    :raises RequestException: no discovery document in time (``DeadlinePassed`` too).
    :raises MalformedResponse: one came, but it is no JSON object.
    :raises StoreUnavailable: the sign-in's state cannot be kept.
    """
    client = orcid_client()
    with ending_by(time.monotonic() + EXCHANGE_BUDGET):
        try:
            client.load_server_metadata()
        except (ValueError, TypeError) as exc:  # not JSON; JSON but no object (a list)
            raise MalformedResponse("ORCID's OpenID discovery document is none.") from exc
    return client.authorize_redirect(redirect_uri(), **kwargs)


def exchange_code(**kwargs) -> dict:
    """The token for the code this callback brought, within ``EXCHANGE_BUDGET`` in all.

    A redirect is not followed: it would post our client secret wherever it points.

    :raises RequestException: ORCID did not answer in time (``DeadlinePassed`` too).
    :raises MalformedResponse: with openid, ORCID's keys are no key set, or its discovery
        document names none; or the token's expires_in is past any clock.
    """
    with ending_by(time.monotonic() + EXCHANGE_BUDGET):
        try:
            return orcid_client().authorize_access_token(allow_redirects=False, **kwargs)
        except (KeyError, RuntimeError) as exc:
            # Authlib: KeyError from a JWKS without "keys", RuntimeError from a
            # discovery document without "jwks_uri".
            raise MalformedResponse("ORCID's OpenID signing keys could not be read.") from exc
        except OverflowError as exc:  # Authlib's int() of an expires_in such as 1e400
            raise MalformedResponse("ORCID's token answer could not be read.") from exc


def orcid_client():
    """This app's ORCID client: one OAuth registry per app (Authlib keeps the first client
    it builds, so a registry shared by two apps in one process would sign in at the
    first one's ORCID)."""
    return current_app.extensions["authlib.integrations.flask_client"].orcid


@dataclass(frozen=True, slots=True)
class Researcher:
    orcid: str
    name: str | None
    sid: str
    token: str | None  # the ORCID access token, from the server-side session
    # How ORCID says the researcher signed in ("pwd", "mfa"), from a verified ID token;
    # empty without openid or for a public client (ORCID sends amr to members only).
    amr: tuple[str, ...] = ()
    # When the server-side session ends (Unix time); None for a record written before
    # sessions kept it, or while Redis is down.
    expires: float | None = None


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
            # PKCE is optional at ORCID (its discovery lists no code_challenge_methods),
            # so always sending it costs nothing where it is ignored.
            "code_challenge_method": "S256",
        },
    }
    if "openid" in settings.orcid_scope.split():
        # Authlib then checks the ID token: issuer, audience, signature (JWKS), nonce;
        # callback() passes ORCID's form of amr and checks at_hash.
        kwargs["server_metadata_url"] = f"{base}/.well-known/openid-configuration"
    oauth = _OAuth(cache=StateCache())
    oauth.init_app(app)
    oauth.register("orcid", **kwargs)


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def allowed_hosts() -> frozenset[str]:
    """ALLOWED_REDIRECT_HOSTS, and PUBLIC_URL's origin: its scheme and port, not any."""
    settings = _gatekeeper().settings
    hosts = set(settings.allowed_redirect_hosts)
    if settings.public_url:
        public = urlsplit(settings.public_url)
        hosts.add(f"{public.scheme.lower()}://{public.netloc.lower()}")
    return frozenset(hosts)


# OAuth 2.0's error codes (RFC 6749 4.1.2.1 and 5.2) and Authlib's own for the state.
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
        "mismatching_state",
        "missing_token",
    }
)


def oauth_error_code(error, otherwise: str) -> str:
    """An OAuth error as logged: a known code, else ``otherwise``. It may come from the
    callback's query, which anyone can write."""
    return error if error in OAUTH_ERRORS else otherwise


def redirect_uri() -> str:
    """Where ORCID sends the researcher back: ``PUBLIC_URL``'s /callback.

    The demo answers at whatever loopback name it was opened with (``localhost`` or
    ``127.0.0.1``), since the cookie that started the sign-in is only sent back there;
    never at a name a Host header gives that is not loopback.
    """
    settings = _gatekeeper().settings
    opened_on_loopback = is_loopback_host(urlsplit(f"//{request.host}").hostname)
    if settings.public_url and not (settings.demo and opened_on_loopback):
        return settings.public_url.rstrip("/") + "/callback"
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
    stored = _gatekeeper().store.get_session(sid, orcid)
    if not session_belongs_to(stored, orcid):
        return None  # signed out, expired server-side, or a cookie naming another iD
    amr = data.get("amr")
    amr = tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else ()
    return Researcher(
        orcid, data.get("name"), sid, session_token(stored), amr, session_expires(stored)
    )


def _sign_out_here() -> None:
    """Forget the session in this browser and for the rest of this request.

    NOTE: the page that follows renders the layout, which asks who is signed in: the
    researcher this request started with must not be shown (nor a fresh CSRF token put
    in the cookie the browser is told to drop).
    """
    session.clear()
    g.researcher = None


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


def too_many_sign_ins() -> bool:
    """Counts one more trip to ORCID (a sign-in, or an earn's permission) from this
    client's address; whether that is past SIGN_INS_PER_MINUTE.

    NOTE: each trip keeps its state in Redis for ten minutes, and a client that keeps
    sending its old cookie prunes none of them: this count is what bounds them.
    """
    gk = _gatekeeper()
    address = limited_address(request.environ, gk.settings.forwarded_allow_ips)
    return gk.store.hit(f"sign-ins:{address}", 60) > gk.settings.sign_ins_per_minute


@bp.get("/login")
def login():
    """Send the researcher to ORCID to sign in; ``next`` is where to return to.

    :raise 429: past SIGN_INS_PER_MINUTE sign-ins started from this client address.
    :raise 502: with openid, ORCID's discovery document did not come, or is none.
    :raise 503: Redis cannot keep the sign-in's state.
    """
    if too_many_sign_ins():
        _sign_in_outcome("failed", "too_many", level=logging.WARNING)
        page, status = _sign_in_failed(
            "More sign-ins were started from your network in the last minute than we "
            "take. Please wait a minute and try again.",
            429,
            title="Too many sign-ins at once",
            restart=False,
        )
        return page, status, {"Retry-After": "60"}
    session["next"] = safe_next(request.args.get("next"), allowed_hosts())
    try:
        return redirect_to_orcid()
    except StoreUnavailable:
        _sign_in_outcome("unavailable", "store_unavailable", level=logging.WARNING)
        return _sign_in_failed("We cannot sign you in just now.", 503)
    except (RequestException, MalformedResponse) as exc:
        reason, title, said = orcid_failure(exc)
        _sign_in_outcome("unavailable", reason, level=logging.WARNING)
        return _sign_in_failed(
            f"{said}; please try again in a few minutes.", 502, title=title, restart=False
        )


def orcid_failure(exc: Exception) -> tuple[str, str, str]:
    """(the reason logged, the page's title, what happened) when ORCID did not answer a
    trip to it (RequestException) or answered with something that is none (otherwise)."""
    if isinstance(exc, RequestException):
        return "orcid_unreachable", "ORCID is not answering", "ORCID did not answer"
    return (
        "orcid_bad_answer",
        "ORCID gave an answer we could not read",
        "ORCID's answer could not be read",
    )


def still_signed_in(researcher: Researcher) -> bool | None:
    """Whether the researcher's session still stands now; None when Redis cannot say.

    NOTE: for what a request keeps after its session was read at its start (a token, a
    write permission): "sign out everywhere" or Disconnect may have run meanwhile, and
    what they no longer find must not outlast them.
    """
    found = _gatekeeper().store.get_session(researcher.sid, researcher.orcid)
    if found is UNAVAILABLE:
        return None
    return session_belongs_to(found, researcher.orcid)


@bp.get("/callback")
def callback():
    """ORCID sends the researcher back here with a code (or an error) and our state.

    The same URL ends an earn flow (app/web/earning.py), ORCID allowing one redirect URI.

    :raise 400: a wrong, missing or replayed state, or a code ORCID refuses.
    """
    from app.web import earning  # it builds on this module

    state = request.args.get("state", "")
    if earning.handles_callback(state):
        # Not a sign-in: the researcher's answer to our request to add to their record.
        return earning.complete(state)
    integration = orcid_client().framework
    if request.args.get("error"):
        # The researcher pressed Deny at ORCID: no session, a page that says so. Only a
        # sign-in this browser started is ended and counted: anyone can send this URL.
        error = request.args["error"]
        if integration.started_here(session, state):
            integration.clear_state_data(session, state)
            outcome = "denied" if error == "access_denied" else "failed"
            _sign_in_outcome(outcome, oauth_error_code(error, "unknown_error"))
        else:
            _sign_in_outcome("failed", "no_state")  # not counted as a researcher's denial
        return render_template("denied.html"), 200
    try:
        return _complete_sign_in(integration, state)
    except StoreUnavailable:
        _sign_in_outcome("unavailable", "store_unavailable", level=logging.WARNING)
        return _sign_in_failed("We cannot sign you in just now.", 503)


def _complete_sign_in(integration, state: str):
    """The callback after a code came back: check where, exchange it, start the session.

    :raises StoreUnavailable: when the state cannot be read (Redis is down).
    """
    if not integration.started_here(session, state):
        started_at = integration.started_at(state)
        if started_at and started_at != request.host_url:
            # The cookie that started this sign-in belongs to another host name, so the
            # browser did not send it here: say where to go, not "expired".
            _sign_in_outcome("failed", "wrong_host")
            start, back = started_at.rstrip("/"), request.host_url.rstrip("/")
            return _sign_in_failed(
                f"You started signing in at {start} but came back at {back}; "
                f"open {back} and sign in again.",
                400,
                restart=False,
            )
    settings = _gatekeeper().settings
    try:
        token = exchange_code(claims_options=_id_token_claims(settings), claims_cls=OrcidIDToken)
        if not isinstance(token.get("access_token"), str | None):
            raise TypeError("access_token is not a string")
        if "userinfo" in token:
            _check_at_hash(token["userinfo"], token.get("access_token"), token.get("id_token"))
    except JoseError as exc:
        # An ID token that fails verification: wrong signature, issuer, audience, nonce,
        # at_hash or amr, or expired. Authlib checks them with joserfc, whose errors are
        # its own.
        _sign_in_outcome("failed", "id_token", detail=type(exc).__name__, level=logging.WARNING)
        return _sign_in_failed("ORCID's answer could not be verified.", 400)
    except AuthlibBaseError as exc:
        # A missing, spent or foreign state (mismatching_state), or a code ORCID refused.
        _sign_in_outcome(
            "failed", oauth_error_code(getattr(exc, "error", None), type(exc).__name__)
        )
        return _sign_in_failed("This sign-in link has expired or was already used.", 400)
    except RequestException:  # DeadlinePassed among them
        _sign_in_outcome("unavailable", "orcid_unreachable", level=logging.WARNING)
        return _sign_in_failed(
            "ORCID did not answer; please try again in a few minutes.",
            502,
            title="ORCID is not answering",
        )
    except (ValueError, TypeError, AttributeError, MalformedResponse) as exc:
        # ORCID's token endpoint answered 200 with something that is no token (an HTML
        # page, a JSON list, an expires_in that is not a number): Authlib raises these.
        # Or, with openid, its keys are no key set, or expires_in is 1e400 (exchange_code).
        _sign_in_outcome(
            "unavailable", "orcid_bad_answer", detail=type(exc).__name__, level=logging.WARNING
        )
        return _sign_in_failed(
            "ORCID's answer could not be read; please try again in a few minutes.",
            502,
            title="ORCID gave an answer we could not read",
        )
    try:
        orcid = parse_orcid_id(str(token.get("orcid") or token.get("userinfo", {}).get("sub")))
    except InvalidOrcidId:
        _sign_in_outcome("failed", "no_orcid", level=logging.WARNING)
        return _sign_in_failed("ORCID did not tell us your iD.", 502)
    if "openid" in settings.orcid_scope.split() and "userinfo" not in token:
        _sign_in_outcome("failed", "no_id_token", orcid=orcid, level=logging.WARNING)
        return _sign_in_failed("ORCID's answer could not be verified.", 502)
    if "userinfo" in token and not _same_orcid(token["userinfo"].get("sub"), orcid):
        # The verified ID token names the researcher: the token answer must agree with it.
        _sign_in_outcome("failed", "id_token_subject", orcid=orcid, level=logging.WARNING)
        return _sign_in_failed("ORCID's answer could not be verified.", 400)
    next_url = session.pop("next", "/")
    amr = authentication_methods(token.get("userinfo", {}).get("amr"))
    if not start_session(orcid, token.get("name") or None, token.get("access_token"), amr=amr):
        _sign_in_outcome("unavailable", "store_unavailable", orcid=orcid, level=logging.WARNING)
        return _sign_in_failed("We cannot keep you signed in just now.", 503)
    _sign_in_outcome("ok", None, orcid=orcid, amr=list(amr))
    return redirect(safe_next(next_url, allowed_hosts()))


def _sign_in_outcome(
    outcome: str, reason: str | None, *, orcid: str | None = None, level=logging.INFO, **fields
) -> None:
    """Count a sign-in by outcome and log it as one line: never a code, state or token."""
    SIGN_INS.labels(outcome).inc()
    entry = {"event": "sign_in", "outcome": outcome, **fields}
    if reason:
        entry["reason"] = reason
    if orcid:
        entry["orcid"] = orcid
    logger.log(level, "signed in" if outcome == "ok" else "sign-in stopped", extra=entry)


def _same_orcid(subject, orcid: str) -> bool:
    try:
        return parse_orcid_id(str(subject)) == orcid
    except InvalidOrcidId:
        return False


def message_page(title: str, message: str, action: tuple[str, str], status: int = 200):
    """A page with a title, a sentence and one way on (``action``: label and URL)."""
    return render_template("message.html", title=title, message=message, action=action), status


def _sign_in_failed(
    reason: str, status: int, title: str = "Sign-in did not complete", restart: bool = True
):
    """A page that says why sign-in stopped, with a way to start again; no session."""
    return message_page(
        title,
        f"{reason} Please start again." if restart else reason,
        ("Sign in with ORCID", sign_in_url()),
        status,
    )


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


def _check_at_hash(claims, access_token: str | None, id_token: str | None) -> None:
    """The ID token's ``at_hash`` must be the hash of the access token it came with.

    NOTE: Authlib checks ``at_hash`` only when it picks the claims class itself; given
    ``claims_cls`` it no longer passes the access token (``parse_id_token``), so it is
    checked here, with Authlib's own half hash for the algorithm the (verified) ID token
    was signed with (OIDC Core 3.1.3.6). As Authlib does, a token without ``at_hash``
    passes.

    :raises InvalidClaimError: when the hash does not match, or there is no access token.
    """
    at_hash = claims.get("at_hash")
    if at_hash is None:
        return
    if not isinstance(at_hash, str) or not access_token or not id_token:
        raise InvalidClaimError("at_hash")
    alg = jws.extract_compact(id_token.encode()).headers().get("alg")
    expected = create_half_hash(access_token, alg) if isinstance(alg, str) else None
    if expected is None or not hmac.compare_digest(at_hash.encode("utf-8"), expected):
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
    earlier = session.get("researcher")
    if isinstance(earlier, dict) and isinstance(earlier.get("sid"), str):
        # Signing in again ends the session this browser had: a copy of the old cookie
        # must not stay signed in for the rest of its lifetime.
        gk.store.delete_session(earlier["sid"], earlier.get("orcid"))
    session.clear()
    sid = secrets.token_urlsafe(24)
    lifetime = gk.settings.session_lifetime
    if not gk.store.put_session(
        sid, session_record(orcid, access_token, time.time() + lifetime), lifetime
    ):
        return False
    session.permanent = True
    session["researcher"] = {"orcid": orcid, "name": name, "sid": sid, "amr": list(amr)}
    return True


@bp.get("/logout")
def logout_page():
    return render_template("logout.html")


@bp.post("/logout")
def logout():
    """End the session; the form's CSRF token must match the session's."""
    if not csrf_ok():
        return _form_expired("That sign-out form had expired.", "Sign out", "login.logout_page")
    researcher = session.get("researcher")
    if isinstance(researcher, dict) and isinstance(researcher.get("sid"), str):
        if not _gatekeeper().store.delete_session(researcher["sid"], researcher.get("orcid")):
            # Keep the cookie, so the researcher can try again: saying "signed out" while
            # the session lives on server-side would be a lie.
            return message_page(
                "Could not sign you out",
                "We could not end your session just now. Please try again in a minute.",
                ("Sign out", url_for("login.logout_page")),
                503,
            )
        logger.info(
            "signed out", extra={"event": "sign_out", "orcid": str(researcher.get("orcid"))[:40]}
        )
    _sign_out_here()
    return message_page(
        "Signed out", "You are signed out of the gatekeeper.", ("Home", url_for("pages.index"))
    )


@bp.post("/logout/everywhere")
def logout_everywhere():
    """End every session and personal access token of the signed-in researcher, on every
    browser, script and worker.

    The researcher's index of sessions (``gk:{<iD>}:si``) names them all; each worker checks
    a remembered answer against Redis once it is a second old, so within a second no
    cookie of theirs counts anywhere. Their ORCID token stays (Disconnect revokes it).
    """
    if not csrf_ok():
        return _form_expired("That sign-out form had expired.", "Sign out", "login.logout_page")
    who = current_researcher()
    if who is None:
        session.clear()
        return redirect(url_for("pages.index"))
    ending = _end_everything(who)
    if ending is None:
        return message_page(
            "Could not sign you out",
            "We could not end your sessions just now. Please try again in a minute.",
            ("Sign out", url_for("login.logout_page")),
            503,
        )
    tokens = ending.tokens
    logger.info(
        "signed out everywhere",
        extra={
            "event": "sign_out_everywhere",
            "orcid": who.orcid,
            "sessions": len(ending.records),
            "tokens": tokens,
            "confirmed": ending.confirmed,
        },
    )
    _sign_out_here()
    message = "Every browser you signed in with is signed out of the gatekeeper."
    if tokens:
        message += (
            f" Your {tokens} personal access token{'s are' if tokens != 1 else ' is'} revoked."
        )
    if not ending.confirmed:
        message += UNCONFIRMED
    return message_page("Signed out everywhere", message, ("Home", url_for("pages.index")))


UNCONFIRMED = (
    " We could not confirm all of it just now (our store did not answer, or no copy of it "
    "confirmed in time): to be sure, sign in and do this again in a minute."
)


@dataclass(frozen=True, slots=True)
class Ending:
    records: list[str]  # the session records taken (their ORCID tokens, for Disconnect)
    tokens: int  # personal access tokens revoked
    confirmed: bool  # every part answered, and reached the replicas asked for


def _end_everything(who: Researcher) -> Ending | None:
    """End every session and personal access token of the researcher; None when Redis
    could not end the sessions (nothing of it may have happened: try again).

    Tokens first, so a failure leaves this browser signed in to try again. Once the
    sessions are taken, it goes on to the end whatever else fails: a second try would
    find this browser signed out, and the records (for Disconnect) gone.
    NOTE: the second revocation, once no session stands, takes a token that a create
    which read its session before the sessions ended stored after the first one listed
    them (and a create that stores later finds its session gone: app/web/tokens.py).
    """
    gk = _gatekeeper()
    tokens = gk.access_tokens.revoke(who.orcid)
    if tokens is None:
        return None
    try:
        records, confirmed = gk.store.take_sessions_of(who.orcid), True
    except NotReplicated as exc:
        records, confirmed = exc.taken, False
    if records is None:
        return None
    late = gk.access_tokens.revoke(who.orcid)
    gone = gk.store.delete_session(who.sid, who.orcid)
    return Ending(records, tokens + (late or 0), confirmed and late is not None and gone)


def _form_expired(message: str, label: str, endpoint: str):
    return message_page("Please try again", message, (label, url_for(endpoint)), 400)


@bp.get("/disconnect")
def disconnect_page():
    """What "Disconnect" deletes, and the button (a form: it changes things)."""
    base = _gatekeeper().settings.orcid_base_url.rstrip("/")
    return render_template("disconnect.html", trusted_parties=f"{base}/trusted-parties")


@bp.post("/disconnect")
def disconnect():
    """Delete what we hold about the researcher and revoke their ORCID token.

    Every session of theirs ends (not only this browser's), with the ORCID access tokens
    they carry, their personal access tokens are revoked, and their cached decisions go.
    Then each ORCID token is revoked at ORCID; if ORCID does not confirm it, ours are
    deleted all the same and the page says so.
    """
    if not csrf_ok():
        return _form_expired(
            "That disconnect form had expired.", "Disconnect", "login.disconnect_page"
        )
    who = current_researcher()
    if who is None:
        return message_page(
            "Please sign in first",
            "Sign in with ORCID to disconnect it: we need to know whose data to delete.",
            ("Sign in with ORCID", url_for(".login", next=url_for(".disconnect_page"))),
            401,
        )
    gk = _gatekeeper()
    ending = _end_everything(who)
    if ending is None:
        # Keep the cookie, so the researcher can try again; nothing is revoked yet.
        return message_page(
            "Could not disconnect",
            "We could not delete your data just now. Please try again in a minute.",
            ("Disconnect", url_for(".disconnect_page")),
            503,
        )
    records, access_tokens = ending.records, ending.tokens
    kept, write_token_gone = _take_write_token(who.orcid)
    tokens = list(dict.fromkeys(filter(None, [who.token, kept, *map(session_token, records)])))
    decisions_gone = gk.store.forget_decisions(who.orcid)
    revoked = revoke_at_orcid(tokens)
    _sign_out_here()
    logger.info(
        "disconnected",
        extra={
            "event": "disconnect",
            "orcid": who.orcid,
            "sessions": len(records),
            "tokens": len(tokens),
            "access_tokens": access_tokens,
            "revoked": revoked,
            "decisions_deleted": decisions_gone,
            "confirmed": ending.confirmed,
        },
    )
    message = "We have deleted your sessions and your ORCID access token."
    if access_tokens:
        message += " Your personal access tokens for scripts are revoked."
    if not ending.confirmed:
        message += UNCONFIRMED
    if not write_token_gone:
        message += (
            " We could not delete the permission to add to your record just now (Redis "
            "did not answer): please disconnect again in a minute."
        )
    elif kept:
        message += (
            " The permission to add to your record is gone too; what we added stays on "
            "your ORCID record until you delete it there."
        )
    if decisions_gone:
        message += " Our saved decisions about your access are deleted too."
    else:
        minutes = max(1, gk.settings.decision_ttl // 60)
        message += (
            " Our saved decisions about your access could not be deleted just now; they "
            f"expire by themselves within {minutes} minutes."
        )
    if revoked:
        message += " ORCID has revoked our access to your record."
    else:
        message += (
            " ORCID did not confirm that our access to your record is revoked: you can "
            "remove this service from the trusted parties in your ORCID account."
        )
    return message_page(
        "Disconnected" if revoked else "Disconnected here; not confirmed at ORCID",
        message,
        ("Home", url_for("pages.index")),
    )


def _take_write_token(orcid: str) -> tuple[str | None, bool]:
    """(the researcher's kept write token (issuing), or None; whether none is kept here
    now). A token read but not deleted is still given, so ORCID revokes it."""
    tokens = _gatekeeper().write_tokens
    try:
        kept = tokens.get(orcid)
    except redis.RedisError:
        logger.warning("could not read a kept write token: Redis did not answer")
        return None, False
    token = kept.access_token if kept is not None else None
    try:
        tokens.delete(orcid)
    except redis.RedisError:
        logger.warning("could not delete a kept write token: Redis did not answer")
        return token, kept is None
    return token, True


def revoke_at_orcid(tokens: list[str]) -> bool:
    """Revoke each token at ``{ORCID_BASE_URL}/oauth/revoke``; True when ORCID confirmed all.

    Each call waits at most ``REVOKE_TIMEOUT`` seconds and all together at most
    ``REVOKE_BUDGET``, so an ORCID that hangs costs the researcher seconds, not minutes.
    """
    if not tokens:
        return True
    settings = _gatekeeper().settings
    url = settings.orcid_base_url.rstrip("/") + "/oauth/revoke"
    deadline = time.monotonic() + REVOKE_BUDGET
    confirmed = True
    with DeadlineOAuth2Session(
        settings.orcid_client_id,
        settings.orcid_client_secret,
        revocation_endpoint_auth_method="client_secret_post",
    ) as client:
        for token in tokens:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timeout = min(REVOKE_TIMEOUT, left)
            try:
                with ending_by(time.monotonic() + timeout):
                    response = client.revoke_token(
                        url, token=token, timeout=timeout, allow_redirects=False
                    )
            except RequestException as exc:  # DeadlinePassed among them
                logger.warning("ORCID token revocation failed: %s", type(exc).__name__)
                confirmed = False
                continue
            if response.status_code != 200:
                logger.warning("ORCID token revocation answered %s", response.status_code)
                confirmed = False
    return confirmed
