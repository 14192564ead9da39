"""Reading qualifications from the ORCID v3.0 API over one pooled HTTP session.

Every call has connect and read timeouts; 429/502/503/504 and connection failures are
retried with backoff (honouring ``Retry-After``), bounded both in count and in total
time, so a check answers within ``total_timeout`` seconds even while ORCID is failing.

requests' read timeout bounds each socket read, not a whole answer: a server dripping its
body a byte at a time never trips it. So bodies are streamed with the deadline checked
between chunks and their size capped, and the caller waits on the worker threads no longer
than the deadline, so it answers on time even while a worker is in a slow read. Where
urllib3 loops inside one read (headers, a gzip header, a chunk-size line), the socket is
shut down at the deadline (app/http_deadlines.py), so no worker stays stuck past it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar

import requests
import urllib3
from authlib.common.errors import AuthlibBaseError

from app import metrics
from app.errors import (
    AccessForbidden,
    MalformedResponse,
    OrcidError,
    OrcidUnavailable,
    RecordNotFound,
    TokenInvalid,
    TooManyCandidates,
    error_from_orcid,
)
from app.http_deadlines import DeadlineOAuth2Session, ending_by, mount_deadlines
from app.orcid_id import parse_orcid_id
from app.qualifications import Qualification, UnreadableItem, parse_summaries, read_item

logger = logging.getLogger(__name__)

ORCID_JSON = "application/vnd.orcid+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_ITEMS = 50  # item reads per decision: a real record has a handful of candidates
MAX_BODY_BYTES = 5 * 1024 * 1024  # a record's qualifications are a few kB; this is no record
CHUNK_BYTES = 64 * 1024
# The longest Retry-After we keep ORCID unasked for; a longer one is taken as this.
MAX_QUIET = 600.0
# What goes wrong on the wire: requests' errors while sending, urllib3's while reading a body.
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)
# A deadline the caller sets for the reads it starts, sooner than total_timeout when its
# request has waited already (forward_auth: the check's answer-by time). A context
# variable, because AccessChecker sits between the two and need not know of it.
_caller_deadline: ContextVar[float | None] = ContextVar("orcid_caller_deadline", default=None)


@contextmanager
def reads_ending_by(deadline: float) -> Iterator[None]:
    """Reads started inside end by ``deadline`` (monotonic), as well as within their budget."""
    token = _caller_deadline.set(deadline)
    try:
        yield
    finally:
        _caller_deadline.reset(token)


def caller_deadline() -> float | None:
    """The deadline of the enclosing ``reads_ending_by``, if any."""
    return _caller_deadline.get()


class OrcidClient:
    """Reads a researcher's qualifications: the summary, then each candidate item.

    ``token`` is the researcher's access token when we have one; otherwise a
    ``/read-public`` client-credentials token when client credentials are configured;
    otherwise the public API is read anonymously.
    """

    @classmethod
    def from_settings(cls, settings) -> OrcidClient:
        """The reader a decision uses, as the service and its commands configure it."""
        return cls(
            settings.orcid_api_url,
            base_url=settings.orcid_base_url,
            client_id=settings.orcid_client_id,
            client_secret=settings.orcid_client_secret,
            total_timeout=settings.orcid_timeout,
            check_record_status=settings.orcid_check_record_status,
            max_items=settings.orcid_max_items,
        )

    def __init__(
        self,
        api_url: str = "https://pub.orcid.org/v3.0",
        *,
        base_url: str = "https://orcid.org",
        client_id: str | None = None,
        client_secret: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 5.0,
        total_timeout: float = 8.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        max_concurrency: int = 32,
        max_items: int = MAX_ITEMS,
        max_body_bytes: int = MAX_BODY_BYTES,
        check_record_status: bool | None = None,
        session: requests.Session | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.total_timeout, self.max_retries, self.backoff = total_timeout, max_retries, backoff
        self.max_concurrency, self.max_body_bytes = max_concurrency, max_body_bytes
        self.max_items = max_items
        # The public API's qualification calls skip ORCID's record-status check, so a
        # locked or deactivated record looks readable there: ask /person alongside.
        if check_record_status is None:
            check_record_status = "//pub." in self.api_url
        self.check_record_status = check_record_status
        self.session = session or self._new_session(max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        # NOTE: two locks, neither ever held during I/O: a read carrying the researcher's
        # own token must not wait behind a slow /oauth/token call.
        self._executor_lock = threading.Lock()
        self._token_lock = threading.Lock()  # guards _app_token and _token_fetch
        self._app_token: tuple[str, float] | None = None
        self._token_fetch: Future | None = None  # the one fetch in flight, shared by callers
        # NOTE: per process. ORCID asked us (by Retry-After) not to call before this
        # monotonic time; asking sooner would be refused too, and would prolong it.
        self._quiet_until = 0.0

    @staticmethod
    def _new_session(pool_size: int) -> requests.Session:
        session = mount_deadlines(requests.Session(), pool_size)
        session.headers.update({"Accept": ORCID_JSON, "User-Agent": "orcid-gatekeeper"})
        return session

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Made on first use, so gunicorn workers forked after start-up each get their own.
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="orcid-read"
                )
            return self._executor

    def close(self):
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
        self.session.close()

    # --- the public operation ---------------------------------------------------------

    def read_qualifications(
        self,
        orcid: str,
        wanted: Callable[[Qualification | UnreadableItem], bool] = lambda q: True,
        token: str | None = None,
    ) -> list[Qualification | UnreadableItem]:
        """Read the summary, then every item ``wanted`` picks from it, concurrently.

        An item that disappears between the two reads (404) is skipped. An item ORCID
        sends in a shape we cannot read comes back as an ``UnreadableItem``. The whole read,
        the ``/read-public`` token included, ends within ``total_timeout`` seconds (and by
        the deadline of an enclosing ``reads_ending_by``).

        :raises InvalidOrcidId: before any network call, for a malformed iD.
        :raises OrcidUnavailable: when ORCID fails, or does not answer within the deadline.
        :raises TooManyCandidates: when more than ``max_items`` items would need reading.
        :raises OrcidError: a typed subclass for each way the record can't be read.
        """
        orcid = parse_orcid_id(orcid)
        deadline = time.monotonic() + self.total_timeout
        if (sooner := caller_deadline()) is not None:
            deadline = min(deadline, sooner)
        bearer = token or self._client_token(deadline)
        try:
            return self._read(orcid, wanted, bearer, deadline)
        except TokenInvalid:
            if token is None and bearer is not None:
                with self._token_lock:
                    if self._app_token and self._app_token[0] == bearer:
                        self._app_token = None  # fetch a fresh one next time
            raise

    def _read(self, orcid, wanted, bearer, deadline) -> list[Qualification | UnreadableItem]:
        executor = self.executor
        reads = [executor.submit(self._get_json, f"/{orcid}/qualifications", bearer, deadline)]
        if self.check_record_status:
            # /person raises the typed error for a locked, deactivated... record.
            reads.append(executor.submit(self._get_json, f"/{orcid}/person", bearer, deadline))
        summaries = parse_summaries(_await(reads, deadline)[0])
        # One read per put-code, however often the summary repeats it.
        candidates = list(
            {
                id(s) if s.put_code is None else s.put_code: s for s in summaries if wanted(s)
            }.values()
        )
        if len(candidates) > self.max_items:
            raise TooManyCandidates(len(candidates), self.max_items)

        def read_full(summary) -> Qualification | UnreadableItem | None:
            if summary.put_code is None:
                return summary  # an unreadable summary with no put-code to read it by
            put_code = summary.put_code
            try:
                data = self._get_json(f"/{orcid}/qualification/{put_code}", bearer, deadline)
            except (RecordNotFound, AccessForbidden):
                # Deleted, or made non-public, between the two reads: it cannot count.
                logger.info("qualification %s of %s vanished between reads", put_code, orcid)
                return None
            except MalformedResponse as exc:
                return UnreadableItem(put_code, summary.title, exc.message)
            item = read_item(data)
            if item.put_code != put_code:
                return UnreadableItem(put_code, summary.title, "ORCID sent another item")
            return item

        items = [executor.submit(read_full, c) for c in candidates]
        return [item for item in _await(items, deadline) if item is not None]

    # --- HTTP -------------------------------------------------------------------------

    def _get_json(self, path: str, bearer: str | None, deadline: float):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        response, body = self._request("GET", self.api_url + path, deadline, headers=headers)
        if response.status_code != 200:
            raise error_from_orcid(
                response.status_code, _json_or_none(body), response.headers.get("Location")
            )
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise MalformedResponse(f"ORCID answered with {content_type or 'no type'}, not JSON.")
        if body is None:
            raise MalformedResponse(
                f"ORCID sent a body over {self.max_body_bytes} bytes, or one it could not decode."
            )
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            # RecursionError: nesting deeper than the interpreter's stack, e.g. [[[[...]]]].
            raise MalformedResponse("ORCID sent a body that is not valid JSON.") from exc

    def _request(
        self, method: str, url: str, deadline: float, **kwargs
    ) -> tuple[requests.Response, bytes | None]:
        """One call with bounded retries: the final answer and its body, within the deadline.

        Every attempt's timeouts fit in the deadline. The body is None when it is over
        ``max_body_bytes`` or its content-encoding is broken; the response comes back closed.

        :raises OrcidUnavailable: a 429/5xx or a transport failure outlasted the retries, or
            the deadline passed.
        """
        attempt = 0
        path = _path_only(url)
        endpoint = metrics.orcid_endpoint(path)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or time.monotonic() < self._quiet_until:
                raise OrcidUnavailable()
            timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
            started = time.monotonic()
            failure = None
            try:
                with ending_by(deadline):
                    response = self.session.request(
                        method, url, timeout=timeout, allow_redirects=False, stream=True, **kwargs
                    )
                    if response.status_code in RETRY_STATUSES:
                        response.close()  # unread: its connection is dropped, not pooled
                    else:
                        body = self._read_body(response, deadline)
            except TRANSPORT_ERRORS as exc:
                metrics.ORCID_CALLS.labels(endpoint, "error").inc()
                logger.warning("ORCID %s failed: %s", path, type(exc).__name__)
                delay = self._backoff(attempt)
                failure = exc
            except OrcidUnavailable:
                metrics.ORCID_CALLS.labels(endpoint, "error").inc()
                logger.warning("ORCID %s: the deadline passed while reading the answer", path)
                raise
            else:
                metrics.ORCID_LATENCY.labels(endpoint).observe(time.monotonic() - started)
                metrics.ORCID_CALLS.labels(endpoint, str(response.status_code)).inc()
                if response.status_code not in RETRY_STATUSES:
                    return response, body
                logger.warning("ORCID %s answered %s", path, response.status_code)
                delay = _retry_after(response)
                if delay is None:
                    delay = self._backoff(attempt)
                elif time.monotonic() + delay >= deadline:
                    # Past this read's budget: every read in this process refuses
                    # without asking until then.
                    self._quiet_until = max(
                        self._quiet_until, time.monotonic() + min(delay, MAX_QUIET)
                    )
            attempt += 1
            if attempt > self.max_retries or time.monotonic() + delay >= deadline:
                raise OrcidUnavailable() from failure
            time.sleep(delay)

    def _read_body(self, response: requests.Response, deadline: float) -> bytes | None:
        return read_body(response, deadline, self.max_body_bytes, self.read_timeout)

    def _backoff(self, attempt: int) -> float:
        base = self.backoff * (2**attempt)
        return base + random.uniform(0, base / 2)

    # --- the /read-public token ---------------------------------------------------------

    def _client_token(self, deadline: float) -> str | None:
        """A reusable ``/read-public`` token when client credentials are set, else None.

        Concurrent callers share the one fetch in flight, each waiting on it no longer
        than its own deadline.

        :raises OrcidUnavailable: the token endpoint failed or did not answer in time.
        :raises OrcidError: ORCID refused this service's client credentials.
        """
        if not (self.client_id and self.client_secret):
            return None
        executor = self.executor
        with self._token_lock:
            cached = self._app_token
            if cached and cached[1] > time.time() + 60:
                return cached[0]
            fetch = self._token_fetch
            # A fetch clears itself when it ends; one cancelled by close() never ran to.
            if fetch is None or fetch.cancelled():
                fetch = self._token_fetch = executor.submit(self._fetch_token, deadline)
        # Others may be waiting on this fetch: running out of time here must not cancel it.
        return _await([fetch], deadline, cancel=False)[0]

    def _token_body(self, response: requests.Response, deadline: float) -> requests.Response:
        """The token answer's body, read as a record's is (deadline, size cap), before
        Authlib parses it.

        :raises OrcidUnavailable: a redirect, the deadline passed, or a body over the cap.
        """
        if response.is_redirect:
            response.close()
            raise OrcidUnavailable()
        body = self._read_body(response, deadline)
        if body is None:
            raise OrcidUnavailable()
        # NOTE: requests' Response.json() reads ``_content`` once it is set: Authlib's
        # parser then takes the bounded body instead of reading the socket again.
        response._content = body
        return response

    def _fetch_token(self, deadline: float) -> str:
        """Fetch a ``/read-public`` token and keep it; runs on the executor."""
        try:
            remaining = max(0.1, deadline - time.monotonic())
            oauth = DeadlineOAuth2Session(
                self.client_id,
                self.client_secret,
                scope="/read-public",
                token_endpoint_auth_method="client_secret_post",
            )
            oauth.register_compliance_hook(
                "access_token_response", lambda response: self._token_body(response, deadline)
            )
            try:
                # Not followed: a redirect would post our client secret to wherever it
                # points. The body is read by the hook, within the deadline and the cap.
                with ending_by(deadline):
                    token = oauth.fetch_token(
                        f"{self.base_url}/oauth/token",
                        grant_type="client_credentials",
                        timeout=(min(self.connect_timeout, remaining), remaining),
                        headers={"Accept": "application/json"},
                        allow_redirects=False,
                        stream=True,
                    )
            except TRANSPORT_ERRORS as exc:  # urllib3's: a reset while the hook reads
                raise OrcidUnavailable() from exc
            except (AuthlibBaseError, ValueError, OverflowError) as exc:  # expires_in 1e400
                raise OrcidError(
                    "ORCID refused this service's client credentials; "
                    "check ORCID_CLIENT_ID and ORCID_CLIENT_SECRET."
                ) from exc
            finally:
                oauth.close()
            access_token = token.get("access_token")
            if not isinstance(access_token, str) or not access_token:
                raise MalformedResponse("ORCID's token answer has no access_token.")
            expires_in = float(token.get("expires_in") or 3600)
            with self._token_lock:
                self._app_token = (access_token, time.time() + expires_in)
            return access_token
        finally:
            with self._token_lock:
                self._token_fetch = None


def _await(futures: list[Future], deadline: float, *, cancel: bool = True) -> list:
    """Each future's result, in order, waiting no longer than the deadline.

    The first failure is raised as soon as it happens. A worker stuck in a slow read keeps
    its thread until its socket times out, but the caller answers on time.

    :raises OrcidUnavailable: the deadline passed first; work not yet started is cancelled
        unless ``cancel`` is false (when others may be waiting on it).
    """
    timeout = max(0.0, deadline - time.monotonic())
    done, pending = wait(futures, timeout=timeout, return_when=FIRST_EXCEPTION)
    if cancel:
        for future in pending:
            future.cancel()
    for future in futures:
        if future in done and not future.cancelled() and future.exception() is not None:
            raise future.exception()
    if pending or any(future.cancelled() for future in futures):
        raise OrcidUnavailable()
    return [future.result() for future in futures]


def read_body(
    response: requests.Response, deadline: float, max_bytes: int, read_timeout: float
) -> bytes | None:
    """The whole body of a ``stream=True`` response, read chunk by chunk with the deadline
    checked between chunks.

    None when the body is over ``max_bytes`` (decoded) or its content-encoding is broken.
    The response is closed either way: a connection whose body was read to its end goes
    back to the pool, any other is dropped.

    :raises OrcidUnavailable: the deadline passed before the body ended.
    """
    body = bytearray()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OrcidUnavailable()
            _limit_socket_wait(response, min(read_timeout, remaining))
            try:
                # read1: at most one socket read, so a dripped body is seen chunk by chunk
                # (read(n) would wait for all n bytes).
                chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
            except urllib3.exceptions.DecodeError:
                return None
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > max_bytes:
                return None
    finally:
        response.close()


def _limit_socket_wait(response: requests.Response, seconds: float) -> None:
    """Let the socket wait at most ``seconds`` for the next bytes of this body.

    requests fixed the read timeout when the request was sent; without this a worker could
    wait that long again after the deadline. urllib3 resets the timeout when it reuses the
    connection, so the pool is not affected.
    """
    sock = getattr(response.raw.connection, "sock", None)  # no connection under `responses`
    if sock is not None:
        sock.settimeout(seconds)


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from ``Retry-After``: a number of seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "²", which float refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_or_none(body: bytes | None):
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def _path_only(url: str) -> str:
    # Logs carry the path only: never a token, and no query string.
    return requests.utils.urlparse(url).path
