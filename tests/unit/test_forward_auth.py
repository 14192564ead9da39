"""Which dataset a proxy's check is about, from what the proxy tells us; the worker's memory;
which cold checks are admitted in time."""

import errno
import gc
import re
import secrets
import struct
import threading
import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import create_app
from app.admission import FINISH
from app.cache import session_record
from app.orcid_client import caller_deadline
from app.qualifications import parse_qualification
from app.saved_record import SavedRecord
from app.settings import Settings
from app.web.forward_auth import (
    ENTRY_OVERHEAD,
    JOINED_URLS,
    LAST_DATA_RECV,
    Memo,
    ProxyRequest,
    queued_for,
    size_of,
)
from tests.conftest import POLICY, RESEARCHER, qualified_items


def environ(path="/auth", query="", raw=None, **headers):
    env = {"PATH_INFO": path, "QUERY_STRING": query}
    if raw is not None:
        env["RAW_URI"] = raw
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return env


# JOINED_URLS in its plain form, which takes quadratic time on a URL of many commas.
PLAIN_JOINED_URLS = re.compile(r",\s*(?:/|[A-Za-z][A-Za-z0-9+.-]*://)|,[^?#]*/\.\.?(?:[/?#]|$)")


@given(st.text(alphabet=",/.?#a: ", max_size=30))
def test_the_linear_joined_urls_decides_as_its_plain_form(text):
    assert bool(JOINED_URLS.search(text)) == bool(PLAIN_JOINED_URLS.search(text))


def dataset_of(policy, env):
    found = ProxyRequest(env, env["PATH_INFO"]).dataset(policy)
    return found.key if found else None


class TestProxyRequest:
    @pytest.mark.parametrize(
        "env, expected",
        [
            (environ(query="dataset=sail"), "sail"),
            (environ(query="dataset=nope"), None),
            (environ(X_Original_URI="/datasets/sail/a.csv"), "sail"),
            (environ(X_Forwarded_Uri="/datasets/open/a.csv"), "open"),
            (environ("/auth/datasets/sail/a.csv", raw="/auth/datasets/sail/a.csv"), "sail"),
            (environ(), None),
        ],
        ids=["query", "unknown-query", "nginx", "traefik", "envoy", "nothing"],
    )
    def test_the_dataset_comes_from_the_query_or_the_original_url(self, policy, env, expected):
        assert dataset_of(policy, env) == expected

    @pytest.mark.parametrize(
        "query, uri, expected",
        [
            ("dataset=sail", "/datasets/sail/a.csv", "sail"),
            ("dataset=sail", "/downloads/a.csv", "sail"),  # a URL no dataset owns
            ("dataset=open", "/datasets/sail/a.csv", None),  # another dataset's file
            ("dataset=sail", "/datasets/sail/a,/datasets/open/b", None),  # sent twice
            # URLs servers may read differently: nginx merges "//" into sail's path.
            ("dataset=open", "/datasets//sail/a.csv", None),
            ("dataset=open", "/datasets/sail/%2e%2e/sail/a.csv", None),
            ("dataset=open", "/datasets/sail/a;x/b.csv", None),
        ],
        ids=[
            "agree",
            "unowned-url",
            "another-datasets-url",
            "joined",
            "empty-segment",
            "encoded-dot-segment",
            "path-parameter",
        ],
    )
    def test_the_query_never_judges_another_datasets_url(self, policy, query, uri, expected):
        assert dataset_of(policy, environ(query=query, X_Original_URI=uri)) == expected

    def test_envoy_never_reads_the_browsers_query(self, policy):
        env = environ(
            "/auth/datasets/sail/a.csv",
            query="dataset=open&redirect=1",
            raw="/auth/datasets/sail/a.csv?dataset=open&redirect=1",
        )
        request = ProxyRequest(env, env["PATH_INFO"])
        assert request.dataset(policy).key == "sail"
        assert request.wants_redirect is False

    def test_envoy_asks_for_a_redirect_with_a_header(self, policy):
        env = environ("/auth/datasets/sail/a", raw="/auth/datasets/sail/a", X_Auth_Redirect="1")
        assert ProxyRequest(env, env["PATH_INFO"]).wants_redirect is True

    @pytest.mark.parametrize(
        "headers",
        [
            {"X_Original_URI": "/datasets/open/a", "X_Forwarded_Uri": "/datasets/sail/a"},
            {"X_Original_URI": "/datasets/sail/a", "X_Forwarded_Uri": "/elsewhere"},
        ],
        ids=["two-datasets", "dataset-and-none"],
    )
    def test_sources_that_disagree_fail_closed(self, policy, headers):
        assert dataset_of(policy, environ(**headers)) is None

    @pytest.mark.parametrize(
        "joined",
        [
            "/datasets/open/a,/datasets/sail/a",
            "/datasets/open/a, /datasets/sail/a",
            "/datasets/open/a?q=1,/datasets/sail/a",
            "/datasets/open/a,https://files.example.org/datasets/sail/a",
            # The proxy's first, then a browser's that climbs out of it.
            "/datasets/sail/a,../../../open/x",
            "/datasets/sail/a,x/../../open/x",
            "/datasets/sail/a,.%2e/../../open/x",
            "/datasets/sail/a,./../../open/x",
        ],
    )
    def test_a_header_sent_twice_fails_closed(self, policy, joined):
        # What a server makes of X-Original-URI sent twice (gunicorn joins with ","): one
        # URL, a browser's, must not decide for the other, the proxy's.
        assert dataset_of(policy, environ(X_Original_URI=joined)) is None
        assert dataset_of(policy, environ(X_Forwarded_Uri=joined)) is None

    @pytest.mark.parametrize(
        "uri",
        ["/datasets/open/a,b.csv?cols=x,y", "/datasets/open/a,b/c.csv", "/datasets/open/a,..b"],
    )
    def test_a_comma_inside_one_url_is_fine(self, policy, uri):
        assert dataset_of(policy, environ(X_Original_URI=uri)) == "open"

    def test_sources_that_agree_are_fine(self, policy):
        env = environ(X_Original_URI="/datasets/sail/a", X_Forwarded_Uri="/datasets/sail/b")
        assert dataset_of(policy, env) == "sail"

    def test_envoy_path_is_read_from_the_raw_request_line(self, policy):
        # The browser asked for /datasets/open/%2520/x: a folder literally named "%20"
        # under open. PATH_INFO holds it decoded once (/datasets/open/%20/x); the raw
        # request line keeps what the file server will decode.
        env = environ("/auth/datasets/open/%20/x", raw="/auth/datasets/open/%2520/x")
        assert dataset_of(policy, env) is None  # %25: a double-decoding server reads " "
        env = environ("/auth/datasets/open/two words", raw="/auth/datasets/open/two%20words")
        assert dataset_of(policy, env) == "open"

    @pytest.mark.parametrize(
        "raw",
        [
            "/auth/datasets/open/%252e%252e/sail/x",
            "/auth/datasets/open/..;/sail/x",
            "/auth//datasets/sail/x",
            "/auth/datasets/open/..%2fsail/x",
        ],
        ids=["double-encoded-dots", "path-parameter", "leading-double-slash", "encoded-slash"],
    )
    def test_envoy_paths_servers_read_differently_fail_closed(self, policy, raw):
        env = environ(raw, raw=raw)  # PATH_INFO is not read when the raw line is there
        assert dataset_of(policy, env) is None

    def test_a_url_in_the_query_does_not_make_the_path_a_url(self, policy):
        # "//datasets/sail/x" read as a URL is host "datasets", path "/sail/x".
        env = environ(X_Original_URI="//datasets/sail/x?next=https://example.org/")
        assert dataset_of(policy, env) is None
        env = environ(X_Original_URI="/datasets/sail/x?next=https://example.org/datasets/open/")
        assert dataset_of(policy, env) == "sail"

    def test_original_url_keeps_encoding_and_query_for_next(self):
        env = environ(
            "/auth/datasets/sail/two words.txt",
            query="part=1&of=2",
            raw="/auth/datasets/sail/two%20words.txt?part=1&of=2",
        )
        assert ProxyRequest(env, env["PATH_INFO"]).original_url() == (
            "/datasets/sail/two%20words.txt?part=1&of=2"
        )

    def test_original_url_is_absolute_with_forwarded_host(self):
        env = environ(
            X_Forwarded_Uri="/datasets/sail/a",
            X_Forwarded_Host="data.example.org",
            X_Forwarded_Proto="https",
        )
        assert (
            ProxyRequest(env, "/auth").original_url() == "https://data.example.org/datasets/sail/a"
        )


def session_entry(index: int, cookie_length: int) -> tuple[str, tuple]:
    """A (cookie, (sid, iD, expiry)) pair shaped like the ones a worker remembers."""
    cookie = secrets.token_urlsafe(cookie_length)[:cookie_length]
    return cookie, (secrets.token_urlsafe(32), f"0009-0000-0000-{index % 10_000:04d}", 1e9)


class TestMemo:
    def test_it_never_holds_more_bytes_than_its_bound(self):
        memo = Memo(max_bytes=64 * 1024)
        for index in range(5_000):
            cookie, value = session_entry(index, 40 + index % 900)
            memo.put(cookie, value, size_of(cookie, value))
            assert memo.bytes <= memo.max_bytes
        assert 0 < len(memo) < 5_000
        assert memo.bytes == sum(size for _, size in memo._entries.values())

    @pytest.mark.parametrize("cookie_length", [40, 240, 4_000])
    def test_the_bound_holds_for_the_memory_really_allocated(self, cookie_length):
        # What tracemalloc sees the memo hold (keys, values and the OrderedDict), after
        # ten times more entries than fit: the estimate must not undercount.
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            memo = Memo(max_bytes=1024 * 1024)
            for index in range(10 * memo.max_bytes // (cookie_length + ENTRY_OVERHEAD)):
                cookie, value = session_entry(index, cookie_length)
                memo.put(cookie, value, size_of(cookie, value))
            del cookie, value
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert held <= 1.05 * memo.max_bytes, f"{held} bytes held for {len(memo)} entries"

    def test_the_least_recently_used_goes_first(self):
        memo = Memo(max_bytes=3 * (ENTRY_OVERHEAD + 100))
        for key in "abc":
            memo.put(key, key.upper(), 100)
        assert memo.get("a") == "A"  # now the most recent
        memo.put("d", "D", 100)
        assert memo.get("b") is None
        assert [memo.get(key) for key in "acd"] == ["A", "C", "D"]

    def test_an_entry_bigger_than_the_bound_is_not_kept(self):
        memo = Memo(max_bytes=1_000)
        memo.put("small", 1, 10)
        memo.put("huge", 2, 5_000)
        assert memo.get("huge") is None and memo.get("small") == 1
        assert memo.bytes == 10 + ENTRY_OVERHEAD

    def test_pop_and_clear_give_the_bytes_back(self):
        memo = Memo(max_bytes=10_000)
        memo.put("a", 1, 10)
        memo.put("b", 2, 20)
        memo.put("a", 3, 30)  # replacing counts the new size only
        assert memo.bytes == 50 + 2 * ENTRY_OVERHEAD
        assert memo.pop("a") == 3 and memo.pop("a") is None
        assert memo.bytes == 20 + ENTRY_OVERHEAD
        memo.clear()
        assert memo.bytes == 0 and len(memo) == 0


@pytest.fixture
def forward_auth():
    settings = Settings.from_env(
        {
            "SECRET_KEY": "unit-test-secret-key-0123",
            "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
            "ORCID_CLIENT_SECRET": "secret",
        }
    )
    app = create_app(settings, orcid_reader=SavedRecord({"qualifications": {}}))
    return app, app.wsgi_app


class TestSessionMemory:
    def test_garbage_and_forged_cookies_are_not_remembered(self, forward_auth):
        app, gate = forward_auth
        client = app.test_client()
        serializer = app.session_interface.get_signing_serializer(app)
        forged = serializer.dumps({"researcher": {"orcid": "0000-0002-1825-0097", "sid": "x"}})
        cookies = [secrets.token_urlsafe(600) for _ in range(50)]
        cookies += [forged[:-3] + secrets.token_urlsafe(2)[:3] for _ in range(50)]
        for cookie in cookies:
            client.set_cookie("gatekeeper_session", cookie)
            response = client.get("/auth", headers={"X-Original-URI": "/datasets/sail-cohort/a"})
            assert response.status_code == 401
        assert len(gate.sessions) == 0 and gate.sessions.bytes == 0

    def test_a_verified_cookie_is_remembered_once(self, forward_auth):
        app, gate = forward_auth
        serializer = app.session_interface.get_signing_serializer(app)
        cookie = serializer.dumps(
            {"researcher": {"orcid": "0009-0000-0000-0017", "sid": "s1", "name": "A"}}
        )
        environ = {"HTTP_COOKIE": f"gatekeeper_session={cookie}"}
        first = gate.session(environ)
        assert first[:2] == ("s1", "0009-0000-0000-0017") and first[2] > time.time()
        assert gate.session(environ) == first
        assert len(gate.sessions) == 1 and gate.sessions.bytes > len(cookie)


class TestMemoUnderThreads:
    def test_four_threads_never_break_the_memo_or_its_byte_count(self):
        import threading

        from app.web.forward_auth import ENTRY_OVERHEAD, Memo

        memo = Memo(max_bytes=200 * (ENTRY_OVERHEAD + 100))
        errors = []

        def churn(offset):
            try:
                for n in range(20_000):
                    key = (offset + n) % 500
                    memo.put(key, n, 100)
                    memo.get((key + 7) % 500)
                    if n % 3 == 0:
                        memo.pop((key + 11) % 500)
            except Exception as exc:  # a race shows as KeyError or a broken order
                errors.append(exc)

        import sys

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often, so a race has its chances
        try:
            for _ in range(3):
                threads = [threading.Thread(target=churn, args=(i * 131,)) for i in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert errors == []
        assert memo.bytes == len(memo) * (ENTRY_OVERHEAD + 100)
        assert memo.bytes <= memo.max_bytes


class QueuedSocket:
    """The connection gunicorn puts in the environ, as TCP_INFO tells it: data came in
    ``seconds`` ago."""

    def __init__(self, seconds: float):
        self.milliseconds = round(seconds * 1000)

    def getsockopt(self, level, name, size):
        info = bytearray(size)
        struct.pack_into("=I", info, LAST_DATA_RECV, self.milliseconds)
        return bytes(info)


class UnixSocket:
    """A connection with no TCP_INFO (a Unix socket): the kernel says nothing."""

    def getsockopt(self, level, name, size):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")


class QualifiedReader:
    """The researcher meets the test policy's ``sail``; each read notes its deadline."""

    def __init__(self):
        self.deadlines = []

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        self.deadlines.append(caller_deadline())
        return [parse_qualification(item) for item in qualified_items()]


SAIL = {"X-Original-URI": "/datasets/sail/a.csv"}


@pytest.fixture
def qualified(write_policy):
    """A gate (ORCID_TIMEOUT 2 s) whose researcher qualifies, a client signed in, the reader."""
    settings = Settings.from_env(
        {
            "SECRET_KEY": "unit-test-secret-key-0123",
            "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
            "ORCID_CLIENT_SECRET": "secret",
            "POLICY_PATH": str(write_policy(POLICY)),
            "ORCID_TIMEOUT": "2",
        }
    )
    reader = QualifiedReader()
    app = create_app(settings, orcid_reader=reader)
    sid = secrets.token_urlsafe(16)
    assert app.extensions["gatekeeper"].store.put_session(sid, session_record(RESEARCHER, None), 60)
    client = app.test_client()
    client.set_cookie(
        "gatekeeper_session",
        app.session_interface.get_signing_serializer(app).dumps(
            {"researcher": {"orcid": RESEARCHER, "name": "A", "sid": sid, "amr": []}}
        ),
    )
    return app.wsgi_app, client, reader


def queued(seconds: float) -> dict:
    return {"gunicorn.socket": QueuedSocket(seconds)}


class TestAdmission:
    """A cold decision starts only while ORCID_TIMEOUT still fits in the check's second."""

    def test_a_cold_check_queued_past_its_budget_is_refused_without_asking_orcid(self, qualified):
        _, client, reader = qualified
        response = client.get("/auth", headers=SAIL, environ_base=queued(0.8))
        assert response.status_code == 403 and reader.deadlines == []

    def test_a_cold_check_queued_within_its_budget_reads_orcid_until_the_budget(self, qualified):
        _, client, reader = qualified
        before = time.monotonic()
        assert client.get("/auth", headers=SAIL, environ_base=queued(0.5)).status_code == 200
        # Arrived half a second ago: answered by 2 + 1 s after that, the read 0.3 s sooner.
        assert reader.deadlines == [pytest.approx(before - 0.5 + 2 + 1 - FINISH, abs=0.05)]

    def test_without_a_tcp_connection_the_budget_counts_from_the_call(self, qualified):
        _, client, reader = qualified
        before = time.monotonic()
        response = client.get("/auth", headers=SAIL, environ_base={"gunicorn.socket": UnixSocket()})
        assert response.status_code == 200
        assert reader.deadlines == [pytest.approx(before + 2 + 1 - FINISH, abs=0.05)]

    def test_a_refusal_for_time_is_remembered_here_briefly_not_stored(self, qualified):
        gate, client, reader = qualified
        assert client.get("/auth", headers=SAIL, environ_base=queued(5)).status_code == 403
        assert client.get("/auth", headers=SAIL).status_code == 403  # within the second
        assert reader.deadlines == []
        gate.answers.clear()  # as once the second has passed: the store has no refusal
        assert client.get("/auth", headers=SAIL).status_code == 200
        assert len(reader.deadlines) == 1

    def test_a_cached_answer_is_never_refused_however_long_it_queued(self, qualified):
        gate, client, reader = qualified
        assert client.get("/auth", headers=SAIL).status_code == 200
        gate.answers.clear()  # answered from the store, not this worker's memory
        assert client.get("/auth", headers=SAIL, environ_base=queued(60)).status_code == 200
        assert client.get("/auth", headers=SAIL, environ_base=queued(60)).status_code == 200
        assert len(reader.deadlines) == 1

    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            (queued(1.5), 1.5),
            ({"gunicorn.socket": UnixSocket()}, None),
            ({"gunicorn.socket": object()}, None),
            ({}, None),
        ],
        ids=["tcp", "unix-socket", "not-a-socket", "no-gunicorn"],
    )
    def test_the_kernel_says_how_long_the_request_has_waited(self, environ, expected):
        assert queued_for(environ) == expected


class ReadThenWait:
    """A record read that ORCID answered at once, but whose check takes ``delay`` more."""

    def __init__(self, items, delay: float):
        self.items, self.delay = items, delay
        self.answered = threading.Event()

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        found = [parse_qualification(item) for item in self.items]
        self.answered.set()
        time.sleep(self.delay)
        return found


def test_a_stewards_revocation_during_a_read_is_not_undone_by_it(write_policy):
    # The read began with the qualification on the record; it is withdrawn and the
    # steward revokes while the read finishes: its allow must not be stored after that.
    reader = ReadThenWait(qualified_items(), delay=0.5)
    settings = Settings.from_env(
        {
            "SECRET_KEY": "unit-test-secret-key-0123",
            "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
            "ORCID_CLIENT_SECRET": "secret",
            "POLICY_PATH": str(write_policy(POLICY)),
        }
    )
    app = create_app(settings, orcid_reader=reader)
    store = app.extensions["gatekeeper"].store
    sid = secrets.token_urlsafe(16)
    assert store.put_session(sid, session_record(RESEARCHER, None), 60)
    client = app.test_client()
    client.set_cookie(
        "gatekeeper_session",
        app.session_interface.get_signing_serializer(app).dumps(
            {"researcher": {"orcid": RESEARCHER, "name": "A", "sid": sid, "amr": []}}
        ),
    )
    first = {}
    thread = threading.Thread(
        target=lambda: first.setdefault("status", client.get("/auth", headers=SAIL).status_code)
    )
    thread.start()
    assert reader.answered.wait(timeout=10)
    reader.items = []  # withdrawn at ORCID...
    store.forget_orcid(RESEARCHER)  # ...and the steward revokes
    thread.join(timeout=10)
    assert first["status"] == 200  # answered from the record as it was read

    assert app.extensions["gatekeeper"].checker.cached(RESEARCHER, "sail") is None
    reader.delay = 0.0
    time.sleep(1.1)  # past RECHECK_AFTER: the worker asks the store again
    assert client.get("/auth", headers=SAIL).status_code == 403
