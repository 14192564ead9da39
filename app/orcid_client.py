"""Reading qualifications from the ORCID v3.0 API over one pooled HTTP session.

Every call has connect and read timeouts; 429/502/503/504 and connection failures are
retried with backoff (honouring ``Retry-After``), bounded both in count and in total
time, so a check answers within ``total_timeout`` seconds even while ORCID is failing.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from app import metrics
from app.errors import (
    AccessForbidden,
    MalformedResponse,
    OrcidError,
    OrcidUnavailable,
    RecordNotFound,
    TokenInvalid,
    error_from_orcid,
)
from app.orcid_id import parse_orcid_id
from app.qualifications import Qualification, parse_qualification, parse_summaries

logger = logging.getLogger(__name__)

ORCID_JSON = "application/vnd.orcid+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class OrcidClient:
    """Reads a researcher's qualifications: the summary, then each candidate item.

    ``token`` is the researcher's access token when we have one; otherwise a
    ``/read-public`` client-credentials token when client credentials are configured;
    otherwise the public API is read anonymously.
    """

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
        check_record_status: bool | None = None,
        session: requests.Session | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.total_timeout, self.max_retries, self.backoff = total_timeout, max_retries, backoff
        self.max_concurrency = max_concurrency
        # The public API's qualification calls skip ORCID's record-status check, so a
        # locked or deactivated record looks readable there: ask /person alongside.
        if check_record_status is None:
            check_record_status = "//pub." in self.api_url
        self.check_record_status = check_record_status
        self.session = session or self._new_session(max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._app_token: tuple[str, float] | None = None

    @staticmethod
    def _new_session(pool_size: int) -> requests.Session:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"Accept": ORCID_JSON, "User-Agent": "orcid-gatekeeper"})
        return session

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Made on first use, so gunicorn workers forked after start-up each get their own.
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="orcid-read"
                )
            return self._executor

    def close(self):
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
        self.session.close()

    # --- the public operation ---------------------------------------------------------

    def read_qualifications(
        self,
        orcid: str,
        wanted: Callable[[Qualification], bool] = lambda q: True,
        token: str | None = None,
    ) -> list[Qualification]:
        """Read the summary, then every item ``wanted`` picks from it, concurrently.

        An item that disappears between the two reads (404) is skipped.

        :raises InvalidOrcidId: before any network call, for a malformed iD.
        :raises OrcidError: a typed subclass for each way the record can't be read.
        """
        orcid = parse_orcid_id(orcid)
        deadline = time.monotonic() + self.total_timeout
        bearer = token or self._client_token(deadline)
        try:
            return self._read(orcid, wanted, bearer, deadline)
        except TokenInvalid:
            if token is None and bearer is not None:
                self._app_token = None  # fetch a fresh one next time
            raise

    def _read(self, orcid, wanted, bearer, deadline) -> list[Qualification]:
        summary = self.executor.submit(self._get_json, f"/{orcid}/qualifications", bearer, deadline)
        status = None
        if self.check_record_status:
            status = self.executor.submit(self._get_json, f"/{orcid}/person", bearer, deadline)
        summaries = parse_summaries(summary.result())
        if status is not None:
            status.result()  # raises the typed error for a locked, deactivated... record
        candidates = [s for s in summaries if wanted(s)]

        def read_item(put_code: int) -> Qualification | None:
            try:
                data = self._get_json(f"/{orcid}/qualification/{put_code}", bearer, deadline)
            except (RecordNotFound, AccessForbidden):
                # Deleted, or made non-public, between the two reads: it cannot count.
                logger.info("qualification %s of %s vanished between reads", put_code, orcid)
                return None
            return parse_qualification(data)

        items = self.executor.map(read_item, [c.put_code for c in candidates])
        return [item for item in items if item is not None]

    # --- HTTP -------------------------------------------------------------------------

    def _get_json(self, path: str, bearer: str | None, deadline: float):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        response = self._request("GET", self.api_url + path, deadline, headers=headers)
        if response.status_code != 200:
            raise error_from_orcid(
                response.status_code, _json_or_none(response), response.headers.get("Location")
            )
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise MalformedResponse(f"ORCID answered with {content_type or 'no type'}, not JSON.")
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedResponse("ORCID sent a body that is not valid JSON.") from exc

    def _request(self, method: str, url: str, deadline: float, **kwargs) -> requests.Response:
        """One call with bounded retries; every attempt's timeout fits in the deadline."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OrcidUnavailable()
            timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
            endpoint = metrics.orcid_endpoint(_path_only(url))
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, url, timeout=timeout, allow_redirects=False, **kwargs
                )
            except requests.RequestException as exc:
                metrics.ORCID_CALLS.labels(endpoint, "error").inc()
                logger.warning("ORCID %s failed: %s", _path_only(url), type(exc).__name__)
                delay = self._backoff(attempt)
                failure = exc
            else:
                metrics.ORCID_LATENCY.labels(endpoint).observe(time.monotonic() - started)
                metrics.ORCID_CALLS.labels(endpoint, str(response.status_code)).inc()
                if response.status_code not in RETRY_STATUSES:
                    return response
                logger.warning("ORCID %s answered %s", _path_only(url), response.status_code)
                delay = _retry_after(response)
                if delay is None:
                    delay = self._backoff(attempt)
                failure = None
                last = response
            attempt += 1
            if attempt > self.max_retries or time.monotonic() + delay >= deadline:
                if failure is not None:
                    raise OrcidUnavailable() from failure
                return last  # the caller maps the final 429/5xx to OrcidUnavailable
            time.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        base = self.backoff * (2**attempt)
        return base + random.uniform(0, base / 2)

    # --- the /read-public token ---------------------------------------------------------

    def _client_token(self, deadline: float) -> str | None:
        """A reusable ``/read-public`` token when client credentials are set, else None."""
        if not (self.client_id and self.client_secret):
            return None
        with self._lock:
            cached = self._app_token
            if cached and cached[1] > time.time() + 60:
                return cached[0]
            oauth = OAuth2Session(
                self.client_id,
                self.client_secret,
                scope="/read-public",
                token_endpoint_auth_method="client_secret_post",
            )
            try:
                token = oauth.fetch_token(
                    f"{self.base_url}/oauth/token",
                    grant_type="client_credentials",
                    timeout=(self.connect_timeout, max(0.1, deadline - time.monotonic())),
                    headers={"Accept": "application/json"},
                )
            except requests.RequestException as exc:
                raise OrcidUnavailable() from exc
            except (AuthlibBaseError, ValueError) as exc:
                raise OrcidError(
                    "ORCID refused this service's client credentials; "
                    "check ORCID_CLIENT_ID and ORCID_CLIENT_SECRET."
                ) from exc
            finally:
                oauth.close()
            access_token = token.get("access_token")
            if not access_token:
                raise MalformedResponse("ORCID's token answer has no access_token.")
            expires_in = float(token.get("expires_in") or 3600)
            self._app_token = (access_token, time.time() + expires_in)
            return access_token


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from ``Retry-After``: a number of seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_or_none(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


def _path_only(url: str) -> str:
    # Logs carry the path only: never a token, and no query string.
    return requests.utils.urlparse(url).path
