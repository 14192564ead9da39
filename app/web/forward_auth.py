"""The forward-auth check a reverse proxy makes before serving a protected file.

``GET /auth`` (and ``/auth/<original path>`` for Envoy's ext_authz) answers:
- 200 with ``X-Auth-Request-User``, ``X-Orcid-Id`` and ``X-Auth-Request-Dataset``: allowed;
- 401: no valid session. A status, not a redirect, because nginx's auth_request treats
  any other answer as an error; ``?redirect=1`` or ``AUTH_REDIRECT`` answers 302 to
  /login instead, for proxies (Traefik, Caddy, Envoy) that pass our answer to the browser;
- 403: signed in but not qualified, or the URL is no dataset's (fail closed). A refusal
  of a request that accepts HTML (a browser's, as the proxy forwards its Accept header)
  carries a small page linking to the dataset's explanation, ``/datasets/<name>``, and
  ``X-Auth-Request-Dataset``, from which nginx (which never shows our body) redirects
  there. Anyone else (curl, scripts) gets the plain 403.

A request with ``Authorization`` (a script's personal access token, Bearer or Basic) is
judged by its token alone: the researcher's own decision, only for the token's datasets;
401 with a challenge, never a redirect, for a token that opens nothing. Every answer says
in ``X-Accel-Expires`` how long nginx's auth cache may keep it (``cache_for``).

NOTE: this is plain WSGI middleware in front of Flask, not a blueprint. It is the hot
path: measured in-process, a cached check costs 9 µs here against 47 µs for a bare Flask
route, and under gunicorn it serves 125% of a bare Flask endpoint (bench/README.md).
A per-worker memory of recent answers serves repeat checks with no Redis round trip; each
answer is checked against the store again once it is a second old, so no answer outlives
a logout, an expired session or a revocation by more than a second. Both memories are
bounded in bytes, not entries, and a cookie that fails verification is never remembered,
so forged or garbage cookies cost a signature check each and no memory.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from html import escape
from urllib.parse import parse_qs, quote

from itsdangerous import BadSignature
from werkzeug.datastructures import Authorization
from werkzeug.http import parse_accept_header, parse_cookie

from app import metrics
from app.access import decision_from_json
from app.access_tokens import TokenRecord, is_well_formed, looks_like_token
from app.admission import Budget, arrival
from app.cache import UNAVAILABLE, session_belongs_to, session_token
from app.errors import InvalidOrcidId
from app.orcid_client import reads_ending_by
from app.orcid_id import parse_orcid_id
from app.request_path import normalize_path
from app.web.clients import limited_address
from app.web.security import security_headers

logger = logging.getLogger(__name__)

# Counters bound once: the hot path should not look up label sets per request.
ALLOW, DENY = metrics.AUTH_CHECKS.labels("allow"), metrics.AUTH_CHECKS.labels("deny")
UNAUTHENTICATED = metrics.AUTH_CHECKS.labels("unauthenticated")
NO_DATASET, ERROR = metrics.AUTH_CHECKS.labels("no_dataset"), metrics.AUTH_CHECKS.labels("error")
HIT_MEMORY, HIT_STORE = metrics.CACHE.labels("hit_memory"), metrics.CACHE.labels("hit_store")
MISS = metrics.CACHE.labels("miss")
LATENCY = metrics.AUTH_LATENCY
TOKEN_VERIFIED, TOKEN_MALFORMED = (
    metrics.TOKEN_CHECKS.labels("verified"),
    metrics.TOKEN_CHECKS.labels("malformed"),
)
TOKEN_UNKNOWN, TOKEN_EXPIRED = (
    metrics.TOKEN_CHECKS.labels("unknown"),
    metrics.TOKEN_CHECKS.labels("expired"),
)
TOKEN_LIMITED = metrics.TOKEN_CHECKS.labels("rate_limited")
OK, FORBIDDEN, UNAUTHORIZED = "200 OK", "403 Forbidden", "401 Unauthorized"

RECHECK_AFTER = 1.0  # seconds a remembered answer may go unchecked against the store
# A failed token lookup counts against the client's address for this long; past the
# limit (TOKEN_FAILURES_PER_MINUTE), no token from there is looked up until it ends.
FAILURE_WINDOW = 60
TOUCH_EVERY = 60.0  # seconds between a worker's notes of when a token was last used
# Seconds at most a cold check waits for one of the worker's cold slots, and never past
# its budget's last start (app/admission.py): the thread it holds meanwhile is the one
# left for cached answers.
ADMISSION_WAIT = 0.5
# Linux's struct tcp_info (linux/tcp.h): tcpi_last_data_recv, the milliseconds since data
# last arrived on the connection, is the u32 after 8 one-byte fields and 11 u32s.
TCP_INFO = getattr(socket, "TCP_INFO", None)
TCP_INFO_BYTES, LAST_DATA_RECV = 104, 52
# Bytes each of a worker's two memories may hold: about 10,000 signed-in cookies (775
# bytes each), or 12,000 (researcher, dataset) answers. Past that, the least recently
# used go first, and cost one signature check or one store round trip when they return.
MEMO_BYTES = 8 * 1024 * 1024
# What an entry costs besides its key and value: the dict's slot and its share of the
# hash table, the order's link node, the (value, size) pair. CPython 3.11 spends 110-160
# bytes; tests/unit/test_forward_auth.py holds the bound to the memory really allocated.
ENTRY_OVERHEAD = 240


class Memo:
    """A worker's memory of recent answers: least recently used out first, bounded in bytes.

    ``put`` is told what the key and value cost (``size_of`` estimates it); an entry
    bigger than the whole bound is not remembered.

    NOTE: a gthread worker's threads share it, and an OrderedDict's lookup-then-move or
    the byte count's read-then-write would race; one uncontended lock costs well under a
    microsecond per call.
    """

    def __init__(self, max_bytes: int = MEMO_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value, size: int):
        size += ENTRY_OVERHEAD
        with self._lock:
            self._pop(key)
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def pop(self, key):
        with self._lock:
            return self._pop(key)

    def _pop(self, key):
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def size_of(*parts) -> int:
    """Bytes the objects take, tuples counted with their items (one level deep)."""
    total = 0
    for part in parts:
        total += sys.getsizeof(part)
        if isinstance(part, tuple):
            total += sum(sys.getsizeof(item) for item in part)
    return total


class TokenFailures:
    """Lookups of unknown tokens, per client address: counted in the store (shared by
    every worker and instance); past ``limit`` in a window, this worker looks up no token
    from that address until the window ends. /auth and /ga4gh/passport share one count.

    NOTE: a worker stops once it sees the count past the limit, so one address gets at
    most ``limit`` + (workers x instances) lookups a window; a token a worker verified
    before is not looked up, so it goes on.
    """

    def __init__(self, store, limit: int, window: int = FAILURE_WINDOW):
        self.store, self.limit, self.window = store, limit, window
        self._blocked = Memo(64 * 1024)  # client address -> no lookups until (monotonic)

    def blocks(self, address: str) -> bool:
        until = self._blocked.get(address)
        return until is not None and until > time.monotonic()

    def failed(self, address: str) -> None:
        count = self.store.hit(f"token-failures:{address}", self.window)
        if count >= self.limit:
            until = time.monotonic() + self.window
            self._blocked.put(address, until, size_of(address, until))
            if count == self.limit:
                logger.warning(
                    "token lookups refused for a minute: too many unknown tokens",
                    extra={"client": address[:64], "failures": count},
                )


class ForwardAuth:
    def __init__(self, wsgi_app, flask_app):
        self.wsgi_app = wsgi_app
        gk = flask_app.extensions["gatekeeper"]
        self.settings, self.store, self.checker = gk.settings, gk.store, gk.checker
        self.policy_file = gk.policy_file
        self.serializer = flask_app.session_interface.get_signing_serializer(flask_app)
        self.cookie_name = flask_app.config["SESSION_COOKIE_NAME"]
        self.lifetime = self.settings.session_lifetime
        self.public_url = (self.settings.public_url or "").rstrip("/")
        self.page_headers = list(security_headers(self.settings.orcid_base_url).items())
        self.sessions = Memo()  # verified cookie -> (sid, iD, expiry)
        # Verified token -> [digest, TokenRecord, last checked, last touched] (monotonic):
        # as for cookies, only tokens that verified are remembered.
        self.tokens = Memo()
        self.hasher = gk.token_hasher
        self.failures = gk.token_failures
        # (version, sid, iD, dataset) -> (allowed, cached until (Unix), last checked (monotonic))
        self.answers = Memo()
        # Cold decisions this worker works on at once (set_cold_slots: its threads less
        # one), so that a thread is always free for the cheap answers behind them.
        self.cold_slots: threading.BoundedSemaphore | None = None
        self._in_flight: dict[tuple[str, str], threading.Event] = {}  # cold, in this worker
        self._in_flight_lock = threading.Lock()
        self._last_overload_warning = 0.0

    def set_cold_slots(self, slots: int):
        """Bound the cold decisions in progress at once in this worker (gunicorn sets it)."""
        self.cold_slots = threading.BoundedSemaphore(max(1, slots))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path != "/auth" and not path.startswith("/auth/"):
            return self.wsgi_app(environ, start_response)
        started = time.monotonic()
        policy = self.checker.policy  # the answer's, unless a reload swaps it meanwhile
        try:
            status, headers, key = self.judge(environ, path, started)
        except Exception:  # fail closed, and say so in the log, never to the proxy
            logger.exception("auth check failed")
            ERROR.inc()
            status, headers, key = FORBIDDEN, [], None
        if status is OK:
            # NOTE: no body. No proxy shows it to anyone, and nginx keeps its connection to
            # us for the next check only after an answer without one (auth_request never
            # reads the body, so it cannot tell where the next answer starts).
            body = b""
            headers.append(("Content-Length", "0"))
        else:
            if headers and status == FORBIDDEN:
                body = self.refusal_page(headers)  # only a refusal carries headers
            else:
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
                body = status.encode()
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Cache-Control", "no-store"))
        headers.append(("X-Accel-Expires", self.cache_for(key, policy)))
        start_response(status, headers)
        LATENCY.observe(time.monotonic() - started)
        return [body]

    def answer(self, environ, path, started: float | None = None) -> tuple[str, list]:
        """The check's status and headers (``gatekeeper demo`` calls it for its own files).

        ``started`` is when the WSGI call began (monotonic): the latest the request can
        have arrived, for a cold decision's budget.
        """
        status, headers, _ = self.judge(environ, path, started)
        return status, headers

    def cache_for(self, key, policy) -> str:
        """``X-Accel-Expires`` for the answer remembered under ``key``: how long nginx's
        auth cache (docs/proxies/nginx.conf) may serve it; "0" (never) for anything else.

        NOTE: an absolute second, ``@N``, which nginx serves until that second ends. N is
        the second in which the answer was last confirmed against the store (or, if
        sooner, a second before the decision lapses), so a cached copy outlives its last
        confirmation by at most a second: the bound this worker's own memory keeps. An
        answer confirmed in an earlier second is not cached at all. nginx's own
        ``proxy_cache_valid`` counts whole seconds from the next tick, up to two.
        The policy counts as confirmed too: its files seen unchanged this second.
        """
        if key is None or not self.policy_file.confirmed_this_second(policy):
            return "0"
        remembered = self.answers.get(key)
        if remembered is None:
            return "0"
        now = time.time()
        confirmed = now - (time.monotonic() - remembered[2])
        last = int(min(confirmed, remembered[1] - 1.0))
        return f"@{last}" if last >= int(now) else "0"

    def judge(self, environ, path, started: float | None = None) -> tuple[str, list, tuple | None]:
        """The check's status and headers, and the key of the remembered answer behind a
        decision's 200 or 403 (None for any other answer)."""
        if self.policy_file.refresh():
            self.answers.clear()
        policy = self.checker.policy
        request = ProxyRequest(environ, path, started)
        dataset = request.dataset(policy)
        credentials = environ.get("HTTP_AUTHORIZATION")
        if credentials is not None:
            # A script: its token, never a cookie the same request may also carry.
            return self.token_answer(request, credentials, dataset, policy)
        session = self.session(environ)
        if session is None:
            return *self.unauthenticated(request), None
        sid, orcid = session[0], session[1]
        if dataset is None:
            NO_DATASET.inc()
            return FORBIDDEN, [], None  # no dataset owns this URL: fail closed
        key = (self.checker.cache_version(policy), sid, orcid, dataset.key)
        remembered = self.answers.get(key)
        if remembered is not None and is_fresh(remembered):
            HIT_MEMORY.inc()
            allowed = remembered[0]
        else:
            allowed = self.lookup(key, sid, orcid, dataset.key, request)
            if allowed is None:
                return *self.unauthenticated(request), None
        return *self.decision_answer(request, allowed, orcid, dataset.key), key

    def decision_answer(self, request, allowed: bool, orcid: str, dataset: str):
        """200 with the researcher's identity, or the refusal."""
        if not allowed:
            DENY.inc()
            return self.refused(request, dataset)
        ALLOW.inc()
        return OK, [
            ("X-Auth-Request-User", orcid),
            ("X-Orcid-Id", orcid),
            ("X-Auth-Request-Dataset", dataset),
        ]

    def refused(self, request, dataset: str) -> tuple[str, list]:
        """403; for a browser, with the dataset whose explanation to show it."""
        if not request.accepts_html:
            return FORBIDDEN, []
        return FORBIDDEN, [("X-Auth-Request-Dataset", dataset)]

    def refusal_page(self, headers: list) -> bytes:
        """The page a refused browser sees instead of a bare 403, with the pages' headers.

        NOTE: Traefik, Caddy and Envoy hand this body to the browser; nginx's auth_request
        never does, so its config redirects to the explanation instead. The page links
        there rather than explaining: the reasons are the dataset page's to give, and this
        path must stay cheap (the decision behind it may be a worker's memory).
        """
        dataset = headers[0][1]
        found = self.checker.policy.datasets.get(dataset)
        title = found.title if found is not None and found.title else dataset
        body = REFUSAL_PAGE.format(
            root=escape(self.public_url, quote=True),
            page=escape(f"{self.public_url}/datasets/{quote(dataset, safe='')}", quote=True),
            title=escape(title),
        ).encode()
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.extend(self.page_headers)
        return body

    def lookup(self, key, sid, orcid, dataset, request) -> bool | None:
        """One store round trip: session and decision; None when signed out."""
        confirmed = time.monotonic()
        stored_session, raw = self.store.lookup(sid, key[0], orcid, dataset)
        if not session_belongs_to(stored_session, orcid):
            self.answers.pop(key)
            return None  # signed out, expired server-side, or the cookie names another iD
        if stored_session is UNAVAILABLE:
            confirmed = None
        token = session_token(stored_session)
        return self.decided(key, orcid, dataset, raw, token, request, confirmed)

    def decided(self, key, orcid, dataset, raw, token, request, confirmed) -> bool:
        """Whether the stored decision ``raw`` (or, missing, a cold one) allows; remembered
        as confirmed at ``confirmed`` (monotonic), or not at all when that is None.

        NOTE: ``confirmed`` is when the store read that found the session or token began,
        not when this answer is ready: a cold decision takes up to ORCID_TIMEOUT, and a
        sign-out or revocation meanwhile must still be honoured within RECHECK_AFTER of
        it. None when Redis is down: the session was seen there within SESSION_GRACE, no
        later, so nothing is remembered past that; each check asks the store again.
        """
        decision = decision_from_json(raw)
        if decision is not None:
            HIT_STORE.inc()
        else:
            MISS.inc()
            decision = self.decide(orcid, dataset, token, request)
            if decision is None:
                # Refused for want of time or a slot: remembered here only, and only until
                # the next recheck, so that a burst costs no queue and soon tries again.
                answer = (False, time.time() + RECHECK_AFTER, time.monotonic())
                self.answers.put(key, answer, size_of(key, answer))
                return False
        if confirmed is not None:
            until = self.checker.cache_until(decision).timestamp()
            answer = (decision.allowed, until, confirmed)
            self.answers.put(key, answer, size_of(key, answer))
        return decision.allowed

    def decide(self, orcid, dataset, token, request):
        """A cold decision, or None when none can be answered in time (fail closed).

        NOTE: gunicorn accepts connections before a thread is free for them (gthread
        workers queue them in the process, sync workers leave them in the kernel), so a
        burst of cold decisions, each up to ORCID_TIMEOUT, would queue every check behind
        it past the proxy's patience. A cold decision starts only while a whole ORCID read
        still fits in the check's budget, counted from when the request reached this
        host, and its read ends by that budget; a check that gets no slot within
        ADMISSION_WAIT is refused too. Each is refused unless the decision has appeared
        meanwhile (another's read of the same record).
        """
        budget = self.budget(request)
        if not budget.admits(time.monotonic()):
            return self._refuse(orcid, dataset, "queued past their budget")
        slots = self.cold_slots
        if slots is None:
            return self._check(orcid, dataset, token, budget)
        # NOTE: waiting for another thread's read of the same record takes a slot too:
        # a thread that waits serves no cached answer either, and one must stay free.
        if not slots.acquire(timeout=budget.may_wait(time.monotonic(), ADMISSION_WAIT)):
            return self._refuse(orcid, dataset, "every cold slot is busy")
        try:
            with self._in_flight_lock:
                running = self._in_flight.get((orcid, dataset))
                if running is None:
                    mine = self._in_flight[(orcid, dataset)] = threading.Event()
            if running is not None:
                # The same record is being read here already: wait for its answer.
                running.wait(budget.left(time.monotonic()))
                return self.checker.cached(orcid, dataset)
            try:
                return self._check(orcid, dataset, token, budget)
            finally:
                with self._in_flight_lock:
                    self._in_flight.pop((orcid, dataset), None)
                mine.set()
        finally:
            slots.release()

    def budget(self, request) -> Budget:
        """The check's budget, from when its request reached this host."""
        now = time.monotonic()
        arrived = arrival(request.started, now, queued_for(request.environ))
        return Budget.from_arrival(arrived, self.settings.orcid_timeout)

    def _check(self, orcid, dataset, token, budget):
        with reads_ending_by(budget.read_by):
            return self.checker.check(orcid, dataset, token=token)

    def _refuse(self, orcid, dataset, why: str):
        """None (refused), unless the decision has been stored meanwhile."""
        decision = self.checker.cached(orcid, dataset)
        if decision is None:
            now = time.monotonic()
            if now - self._last_overload_warning >= 30:
                self._last_overload_warning = now
                logger.warning("refused cold checks: %s", why)
        return decision

    # -- personal access tokens (app/access_tokens.py) ------------------------------------

    def token_answer(self, request, credentials: str, dataset, policy):
        """The check for a request carrying a token: the researcher's own decision.

        401 (never a redirect) for a token that is malformed, unknown, expired or revoked;
        403 for a dataset outside the token's list, or one the researcher is refused.
        Like a cookie, a token verified once is remembered by this worker and checked
        against the store again once a second, with the decision, in one round trip.

        NOTE: remembered by the token, not the header: Basic takes any user name, so one
        token has endless spellings, and each would otherwise take a place in the memory
        (pushing out other scripts' tokens). Parsing the header costs about a µs.
        """
        token = token_of(credentials)
        found = self.tokens.get(token) if token is not None else None
        if found is None:
            found = self.verify_token(request, token)
            if found is None:
                return *self.unauthenticated(request), None
        digest, record = found[0], found[1]
        if not record.is_live(time.time()):
            TOKEN_EXPIRED.inc()
            self.tokens.pop(token)
            return *self.unauthenticated(request), None
        if dataset is None:
            NO_DATASET.inc()
            return FORBIDDEN, [], None
        if not record.opens(dataset.key):
            DENY.inc()
            return FORBIDDEN, [], None  # outside the token's own list, whatever the decision
        orcid = record.orcid
        key = (self.checker.cache_version(policy), "token", digest, orcid, dataset.key)
        remembered = self.answers.get(key)
        if remembered is not None and is_fresh(remembered):
            # NOTE: the token was checked when this answer was, under a second ago.
            HIT_MEMORY.inc()
            allowed = remembered[0]
        else:
            allowed = self.token_lookup(key, token, found, request)
            if allowed is None:
                return *self.unauthenticated(request), None
        return *self.decision_answer(request, allowed, orcid, dataset.key), key

    def verify_token(self, request, token: str | None):
        """The remembered entry for a token seen here first; None when it opens nothing.

        A malformed token (wrong shape, failed checksum) costs no store lookup. A lookup
        that finds nothing counts against the client's address; past the limit, that
        address's unknown tokens are refused unasked until the window ends.
        """
        if token is None or not is_well_formed(token):
            TOKEN_MALFORMED.inc()
            return None
        address = limited_address(request.environ, self.settings.forwarded_allow_ips)
        if self.failures.blocks(address):
            TOKEN_LIMITED.inc()
            return None
        digest = self.hasher.digest(token)
        stored = self.store.get_token(digest)
        record = None if stored is UNAVAILABLE else TokenRecord.from_json(stored)
        if record is None or not record.is_live(time.time()):
            if stored is not UNAVAILABLE:
                (TOKEN_UNKNOWN if record is None else TOKEN_EXPIRED).inc()
                self.failures.failed(address)
            return None
        TOKEN_VERIFIED.inc()
        now = time.monotonic()
        found = [digest, record, now, now - TOUCH_EVERY]
        self.tokens.put(token, found, size_of(token, tuple(found)) + 400)
        return found

    def token_lookup(self, key, token, found, request) -> bool | None:
        """Token and decision in one store round trip; None when the token is gone."""
        digest, orcid, dataset = key[2], key[3], key[4]
        confirmed = time.monotonic()
        stored, raw = self.store.token_lookup(digest, key[0], orcid, dataset)
        if stored is UNAVAILABLE:
            record = found[1]  # Redis is down; seen there within SESSION_GRACE
            confirmed = None
        else:
            record = TokenRecord.from_json(stored)
        if record is None or record.orcid != orcid or not record.is_live(time.time()):
            self.tokens.pop(token)
            self.answers.pop(key)
            return None  # revoked, expired, or signed out everywhere
        now = time.monotonic()
        touch = now - found[3] >= TOUCH_EVERY
        self.tokens.put(
            token,
            [digest, record, now, now if touch else found[3]],
            size_of(token, tuple(found)) + 400,
        )
        if touch:
            self.store.touch_token(digest, time.time(), record.expires - time.time())
        # A cold decision reads the record as the researcher's live session would (its
        # ORCID token, if they have one); else as the public sees it, or with the
        # /read-limited token kept for issuing.
        orcid_token = self.store.session_token_of(orcid) if raw is None else None
        return self.decided(key, orcid, dataset, raw, orcid_token, request, confirmed)

    def session(self, environ) -> tuple[str, str, float] | None:
        """(sid, ORCID iD, expiry) from the signed session cookie, verified once per worker.

        NOTE: only cookies that verify are remembered. Anyone can send a new garbage cookie
        with every request; remembering failures would let them fill the memory with
        their text (and push out the real sessions).
        """
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(self.cookie_name)
        if not cookie:
            return None
        found = self.sessions.get(cookie)
        if found is not None:
            if found[2] > time.time():
                return found
            self.sessions.pop(cookie)
            return None
        try:
            data, signed_at = self.serializer.loads(
                cookie, max_age=self.lifetime, return_timestamp=True
            )
            researcher = data["researcher"]
            found = (
                str(researcher["sid"]),
                parse_orcid_id(researcher["orcid"]),
                signed_at.timestamp() + self.lifetime,
            )
        except (BadSignature, KeyError, TypeError, InvalidOrcidId):
            return None  # tampered, expired or not signed in: no session
        self.sessions.put(cookie, found, size_of(cookie, found))
        return found

    def unauthenticated(self, request) -> tuple[str, list]:
        UNAUTHENTICATED.inc()
        scheme = request.credentials_scheme
        if scheme is not None:
            # A script: a challenge in the scheme it used, never a redirect to a page.
            realm = 'realm="orcid-gatekeeper"'
            if scheme == "basic":
                return UNAUTHORIZED, [("WWW-Authenticate", f"Basic {realm}")]
            return UNAUTHORIZED, [("WWW-Authenticate", f'Bearer {realm}, error="invalid_token"')]
        if not (self.settings.auth_redirect or request.wants_redirect):
            return UNAUTHORIZED, []
        target = request.original_url()
        login = self.public_url + "/login"
        if target:
            login += "?next=" + quote(target, safe="")
        return "302 Found", [("Location", login)]


def is_fresh(remembered) -> bool:
    """Whether a remembered answer (allowed, until, checked) may be served unchecked: it
    was confirmed against the store under RECHECK_AFTER ago, within the current second of
    the wall clock, and its decision still holds.

    NOTE: the current second, so that nginx may cache the answer to that second's end
    (``cache_for``): an answer confirmed in the second before is checked again first.
    That costs no more store reads than a fixed second would (one per second per answer).
    """
    now = time.time()
    age = time.monotonic() - remembered[2]
    return age < RECHECK_AFTER and age <= now % 1.0 and remembered[1] > now


def token_of(credentials: str) -> str | None:
    """The token in an Authorization header: Bearer, or Basic with it as the password
    (any user name; or as the user name with no password, as ``curl -u TOKEN:`` sends).

    Parsed by werkzeug; None for any other scheme or a header that does not parse.
    """
    try:
        parsed = Authorization.from_header(credentials)
    except ValueError:  # Basic credentials that are not ASCII base64 (werkzeug raises)
        return None
    if parsed is None:
        return None
    if parsed.type == "bearer":
        return parsed.token
    if parsed.type == "basic":
        if not parsed.password and looks_like_token(parsed.username or ""):
            return parsed.username
        return parsed.password
    return None


def queued_for(environ) -> float | None:
    """Seconds since the request's last byte reached this host, or None if unknown.

    NOTE: gunicorn's clock for a request starts only when a thread takes it, and a
    request waits before that: in the kernel's accept queue (sync workers) or in the
    worker's own queue (gthread workers accept greedily). The proxy's clock runs through
    both. Linux keeps, per TCP connection, when data last came in; nothing else arrives
    on it while the proxy waits for our answer, so that is when the request arrived.
    Other sockets (a Unix socket, another OS) say nothing: the budget then counts from
    the WSGI call.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, TCP_INFO_BYTES)
    except (OSError, AttributeError, TypeError):
        return None
    if len(info) < LAST_DATA_RECV + 4:
        return None
    return struct.unpack_from("=I", info, LAST_DATA_RECV)[0] / 1000


HTML_TYPES = ("text/html", "application/xhtml+xml")


def accepts_html(accept: str | None) -> bool:
    """Whether an Accept header names HTML (a browser's); curl's ``*/*`` does not."""
    parsed = parse_accept_header(accept)
    return any(value.lower() in HTML_TYPES and quality > 0 for value, quality in parsed)


# A server joins a header sent twice with a comma (gunicorn: "a,b"): a proxy that added
# its X-Original-URI to a browser's own would hand us two URLs in one. Either may come
# first: a comma before another path or URL, or before a dot segment that would climb
# out of the first URL's path (".../a,../../other/f"), is that join, never one URL.
# NOTE: the second form stops at the next comma ([^?#,]): the last comma before a dot
# segment finds it just as well, and a URL of 8,000 commas costs one pass, not 8,000.
JOINED_URLS = re.compile(r",\s*(?:/|[A-Za-z][A-Za-z0-9+.-]*://)|,[^?#,]*/\.\.?(?:[/?#]|$)")

# No script and no inline style: the Content-Security-Policy of the Flask pages holds.
REFUSAL_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>No access yet · orcid-gatekeeper</title>
  <link rel="stylesheet" href="{root}/static/style.css">
</head>
<body>
  <header><a class="brand" href="{root}/">Dataset access</a></header>
  <main id="content">
    <h1>No access to {title} yet</h1>
    <p>You are signed in, but this file is part of {title}, and your ORCID record does not
    show everything that dataset needs yet.</p>
    <p><a class="button" href="{page}">See why, and what to do</a></p>
  </main>
</body>
</html>
"""


class ProxyRequest:
    """What a proxy's auth sub-request tells us about the browser's request.

    NOTE: only what the proxy itself sets can be trusted. For ``/auth/<path>`` (Envoy)
    the query string is the browser's own, so it is never read for ``dataset`` or
    ``redirect`` (Envoy asks for the redirect with an ``X-Auth-Redirect: 1`` header).
    The original-URL headers are the proxy's, but a proxy may pass a browser's header of
    the other name along (nginx forwards a browser's X-Forwarded-Uri; Traefik and Caddy
    a browser's X-Original-URI): when the sources name different datasets, the check
    fails closed.
    """

    def __init__(self, environ, path, started: float | None = None):
        self.environ = environ
        # When the WSGI call began (monotonic): the latest the request can have arrived.
        self.started = time.monotonic() if started is None else started
        self.appended = path.startswith("/auth/")
        self.query = {} if self.appended else parse_qs(environ.get("QUERY_STRING", ""))

    @property
    def accepts_html(self) -> bool:
        return accepts_html(self.environ.get("HTTP_ACCEPT"))

    @property
    def credentials_scheme(self) -> str | None:
        """``basic`` or ``bearer`` when the request is a script's (it sent credentials, or
        nginx's sign-in location says it did), else None."""
        credentials = self.environ.get("HTTP_AUTHORIZATION")
        if credentials is None:
            marker = self.environ.get("HTTP_X_AUTH_CREDENTIALS", "").lower()
            return marker if marker in ("basic", "bearer") else None
        return "basic" if credentials[:6].lower() == "basic " else "bearer"

    @property
    def wants_redirect(self) -> bool:
        return (
            self.query.get("redirect") == ["1"] or self.environ.get("HTTP_X_AUTH_REDIRECT") == "1"
        )

    def original_uris(self) -> list[str]:
        """Every original URL the request carries: the headers, then the appended path."""
        found = [
            self.environ[name]
            for name in ("HTTP_X_ORIGINAL_URI", "HTTP_X_FORWARDED_URI")
            if self.environ.get(name)
        ]
        if self.appended:
            found.append(self.appended_uri())
        return found

    def appended_uri(self) -> str:
        # The raw request line keeps the browser's percent-encoding, which PATH_INFO has
        # already undone once: decoding it twice would judge another path than is served.
        raw = self.environ.get("RAW_URI") or self.environ.get("REQUEST_URI")
        if raw and raw.startswith("/auth/"):
            return raw[len("/auth") :]
        uri = quote(self.environ.get("PATH_INFO", "")[len("/auth") :])
        if self.environ.get("QUERY_STRING"):
            uri += "?" + self.environ["QUERY_STRING"]
        return uri

    def dataset(self, policy):
        """The dataset ``?dataset=`` names (never for /auth/<path>), else the one the
        original URL lies in; None fails closed.

        With ``?dataset=``, the original URL is still read: one that another dataset owns,
        or one that servers may read differently, fails the check closed rather than be
        judged by the named dataset's rules.
        """
        uris = self.original_uris()
        if any(JOINED_URLS.search(uri) for uri in uris):
            return None  # a header sent twice
        found = {policy.dataset_for_path(uri) for uri in uris}
        names = self.query.get("dataset")
        if names:
            if any(normalize_path(uri) is None for uri in uris):
                return None
            named = policy.datasets.get(names[0])
            return named if found <= {named, None} else None
        if len(found) != 1:
            return None  # no original URL, or sources that disagree
        return found.pop()

    def original_url(self) -> str | None:
        """The URL the browser asked the proxy for, as far as the proxy told us."""
        uris = self.original_uris()
        if not uris:
            return None
        host = self.environ.get("HTTP_X_FORWARDED_HOST")
        if host:
            proto = self.environ.get("HTTP_X_FORWARDED_PROTO", "https")
            return f"{proto}://{host}{uris[0]}"
        return uris[0]
