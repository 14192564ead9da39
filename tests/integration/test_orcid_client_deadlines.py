"""ORCID reads against real loopback servers: deadlines hold when ORCID drips or hangs."""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import threading

import pytest

from app.errors import (
    MalformedResponse,
    OrcidError,
    OrcidUnavailable,
)
from app.orcid_client import MAX_BODY_BYTES, OrcidClient
from app.orcid_writer import OrcidWriter
from tests import orcid_json
from tests.conftest import RESEARCHER

ORCID_TYPE = "application/vnd.orcid+json;charset=UTF-8"
RESEARCHER_TOKEN = "f5af9f51-07e6-4332-8f1a-c0c11c1e3728"
CLIENT_ID = "APP-GATEKEEPER000001"
CLIENT_SECRET = "s3cret-9d1c-client-secret-value"


def qualifications(count: int, owner: str = RESEARCHER) -> list[dict]:
    return [orcid_json.qualification(n, owner=owner) for n in range(1, count + 1)]


# --- real servers on 127.0.0.1 ----------------------------------------------------------

CLIENT_SETTINGS = {
    "backoff": 0.01,
    "connect_timeout": 0.5,
    "read_timeout": 0.5,
    "total_timeout": 2.0,
    "max_retries": 3,
}


class LoopbackServer(socketserver.ThreadingTCPServer):
    """An HTTP/1.1 server on 127.0.0.1: ``answer(handler, method, path)`` writes each reply.

    ``close()`` stops it and joins every connection's thread, so nothing outlives a test.
    """

    daemon_threads = False  # joined by server_close()

    def __init__(self, answer):
        super().__init__(("127.0.0.1", 0), _LoopbackHandler)
        self.answer = answer
        self.stop = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self.connections: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,))
        self.thread.start()

    def process_request(self, request, client_address):
        self.connections.append(request)  # before its thread starts, so close() sees it
        super().process_request(request, client_address)

    def close(self):
        if self.stop.is_set():
            return
        self.stop.set()
        self.shutdown()
        self.thread.join()
        for connection in self.connections:
            # Wakes a handler blocked on this socket; close() alone would not on Linux.
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()


class _LoopbackHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while not self.server.stop.is_set():
            request_line = self.rfile.readline()
            if not request_line.strip():
                return  # the client hung up
            length = 0
            while (line := self.rfile.readline()).strip():
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            self.rfile.read(length)
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            self.server.requests.append((method, path))
            try:
                self.server.answer(self, method, path)
            except OSError:
                return


def http_head(status: int = 200, content_type: str = ORCID_TYPE, **headers) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def record(items: list[dict], owner: str = RESEARCHER):
    """An answer serving ``items`` and their summary as ORCID does, at once."""
    bodies = {f"/v3.0/{owner}/qualifications": orcid_json.summaries(owner, items)}
    for item in items:
        bodies[f"/v3.0/{owner}/qualification/{item['put-code']}"] = item

    def answer(handler, method, path):
        if path in bodies:
            body, status = json.dumps(bodies[path]).encode(), 200
        else:
            body, status = json.dumps(orcid_json.error(404, 9016)).encode(), 404
        handler.wfile.write(http_head(status, Content_Length=len(body)) + body)

    return answer


class Drip:
    """An answer that sends ``head``, then ``dripped`` one byte at a time, then ``tail``."""

    def __init__(self, head: bytes, dripped: bytes, tail: bytes = b"", every: float = 0.05):
        self.head, self.dripped, self.tail, self.every = head, dripped, tail, every
        self.sent = 0  # bytes of ``dripped`` sent so far
        self.finished = threading.Event()  # everything was sent
        self.hung_up = threading.Event()  # the client closed the connection mid-drip

    def __call__(self, handler, method, path):
        handler.wfile.write(self.head)
        for offset in range(len(self.dripped)):
            if handler.server.stop.wait(self.every):
                return
            try:
                handler.wfile.write(self.dripped[offset : offset + 1])
            except OSError:
                self.hung_up.set()
                return
            self.sent += 1
        handler.wfile.write(self.tail)
        self.finished.set()


class Silent:
    """An answer that reads the request and never replies: a hanging endpoint."""

    def __init__(self):
        self.asked = threading.Event()

    def __call__(self, handler, method, path):
        self.asked.set()
        handler.server.stop.wait()


class Loopback:
    """Servers on 127.0.0.1, and OrcidClients that really connect (no `responses` here)."""

    def __init__(self):
        self.servers: list[LoopbackServer] = []
        self.clients: list[OrcidClient] = []

    def serve(self, answer) -> LoopbackServer:
        server = LoopbackServer(answer)
        self.servers.append(server)
        return server

    def client(self, server: LoopbackServer, **overrides) -> OrcidClient:
        settings = CLIENT_SETTINGS | {"base_url": server.url} | overrides
        client = OrcidClient(api_url=server.url + "/v3.0", **settings)
        self.clients.append(client)
        return client

    def close(self):
        # Servers first: that ends any read still waiting on them, so the workers can end.
        for server in self.servers:
            server.close()
        for client in self.clients:
            client.executor.shutdown(wait=True)
            client.session.close()


@pytest.fixture
def loopback():
    harness = Loopback()
    yield harness
    harness.close()


PADDED_SUMMARY = json.dumps(orcid_json.summaries(RESEARCHER, [])).encode() + b" " * 400


class TestSlowOrcid:
    @pytest.mark.parametrize(
        "drip",
        [
            Drip(http_head(Content_Length=len(PADDED_SUMMARY)), PADDED_SUMMARY),
            Drip(
                http_head(Transfer_Encoding="chunked") + b"%x\r\n" % len(PADDED_SUMMARY),
                PADDED_SUMMARY,
                b"\r\n0\r\n\r\n",
            ),
        ],
        ids=["content-length", "chunked"],
    )
    def test_body_dripped_past_the_deadline_is_unavailable_and_the_connection_dropped(
        self, loopback, drip
    ):
        # Every byte comes well within the read timeout: only the deadline can stop this.
        client = loopback.client(loopback.serve(drip), total_timeout=1.0)

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)

        assert not drip.finished.is_set()
        assert drip.sent < len(PADDED_SUMMARY)
        # The reader closed the response rather than leave its connection half-read.
        assert drip.hung_up.wait(timeout=10)

    def test_headers_dripped_past_the_deadline_leave_the_caller_unblocked(self, loopback):
        # The worker is stuck inside requests reading headers; the caller must not be.
        rest = b"\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            ORCID_TYPE.encode(),
            len(PADDED_SUMMARY),
            PADDED_SUMMARY,
        )
        drip = Drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a" * 400, rest)
        client = loopback.client(loopback.serve(drip), total_timeout=1.0)

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)

        assert not drip.finished.is_set()
        assert drip.sent < 400

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_body_over_the_cap_is_a_malformed_response(self, loopback, chunked):
        body = b" " * MAX_BODY_BYTES + json.dumps(orcid_json.summaries(RESEARCHER, [])).encode()

        def answer(handler, method, path):
            if chunked:
                # Size unannounced: only counting the bytes as they come can stop it.
                handler.wfile.write(http_head(Transfer_Encoding="chunked"))
                for start in range(0, len(body), 65536):
                    chunk = body[start : start + 65536]
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.write(b"0\r\n\r\n")
            else:
                handler.wfile.write(http_head(Content_Length=len(body)) + body)

        server = loopback.serve(answer)
        client = loopback.client(server)

        with pytest.raises(MalformedResponse) as raised:
            client.read_qualifications(RESEARCHER)

        assert raised.value.reason == "malformed_response"
        assert len(server.requests) == 1  # not retried

    def test_body_of_exactly_the_cap_is_read(self, loopback):
        summary = json.dumps(orcid_json.summaries(RESEARCHER, [])).encode()
        body = summary + b" " * (MAX_BODY_BYTES - len(summary))

        def answer(handler, method, path):
            handler.wfile.write(http_head(Content_Length=len(body)) + body)

        client = loopback.client(loopback.serve(answer))

        assert client.read_qualifications(RESEARCHER) == []

    def test_connections_are_reused_after_bodies_read_to_the_end(self, loopback):
        server = loopback.serve(record(qualifications(1)))
        client = loopback.client(server, max_concurrency=1)

        client.read_qualifications(RESEARCHER)
        client.read_qualifications(RESEARCHER)

        assert len(server.requests) == 4
        assert len(server.connections) == 1


def first_then(first, then):
    """An answer that is ``first`` for the first request and ``then`` for the rest."""
    calls = []

    def answer(handler, method, path):
        calls.append(path)
        (first if len(calls) == 1 else then)(handler, method, path)

    return answer


def gzipped_with_comment(body: bytes, comment: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, comment, rest) of ``body`` gzipped with a header comment (RFC 1952 FCOMMENT):
    urllib3 decodes nothing until the comment ends, so ``read1`` waits inside for it."""
    member = gzip.compress(body, mtime=0)
    start = member[:3] + bytes([member[3] | 0x10]) + member[4:10]
    return start, comment, b"\0" + member[10:]


def stuck_inside_one_read(body: bytes = PADDED_SUMMARY) -> list[Drip]:
    """Answers of ``body`` whose dripped part urllib3 reads inside one call of ours (400
    bytes at 20 a second: 20 s), where only the socket's shutdown can stop the thread."""
    head, comment, rest = gzipped_with_comment(body, b"c" * 400)
    return [
        Drip(
            b"HTTP/1.1 200 OK\r\nX-Slow: ",
            b"a" * 400,
            b"\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (ORCID_TYPE.encode(), len(body), body),
        ),
        Drip(
            http_head(Content_Encoding="gzip", Content_Length=len(head + comment + rest)) + head,
            comment,
            rest,
        ),
        Drip(
            http_head(Transfer_Encoding="chunked"),
            b"0" * 400,  # leading zeros of the chunk-size line
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
        ),
    ]


STUCK_IDS = ["headers", "gzip-comment", "chunk-size-line"]


class TestNoReaderStuckPastItsDeadline:
    @pytest.mark.parametrize("drip", stuck_inside_one_read(), ids=STUCK_IDS)
    def test_the_reader_is_free_for_the_next_read_after_the_deadline(self, loopback, drip):
        # One reader thread: were it still stuck in the drip, the next read would wait
        # behind it and miss its own deadline.
        server = loopback.serve(first_then(drip, record(qualifications(1))))
        client = loopback.client(server, total_timeout=1.0, max_concurrency=1)

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)
        assert drip.hung_up.wait(timeout=10)  # the socket was shut down mid-drip

        assert [q.put_code for q in client.read_qualifications(RESEARCHER)] == [1]
        assert not drip.finished.is_set() and drip.sent < 400

    @pytest.mark.parametrize("drip", stuck_inside_one_read(), ids=STUCK_IDS)
    def test_a_write_gives_up_at_its_timeout(self, loopback, drip):
        # A write runs in a web thread, which no deadline of a caller's frees.
        writer = OrcidWriter(loopback.serve(drip).url + "/v3.0", timeout=1.0)

        with pytest.raises(OrcidUnavailable):
            writer.delete(RESEARCHER, RESEARCHER_TOKEN, 7)

        assert not drip.finished.is_set() and drip.sent < 400
        writer.session.close()

    def test_the_token_fetch_gives_up_at_its_deadline(self, loopback):
        drip = stuck_inside_one_read()[0]
        token_endpoint = loopback.serve(first_then(drip, Silent()))
        client = TestSlowTokenEndpoint.app_client(
            loopback, loopback.serve(record(qualifications(1))), token_endpoint, max_concurrency=1
        )

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)

        assert drip.hung_up.wait(timeout=10)
        assert not drip.finished.is_set() and drip.sent < 400


class TestSlowTokenEndpoint:
    @staticmethod
    def app_client(loopback, orcid: LoopbackServer, token_endpoint: LoopbackServer, **settings):
        return loopback.client(
            orcid,
            base_url=token_endpoint.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            **settings,
        )

    def test_hanging_token_endpoint_does_not_hold_up_a_read_with_the_researchers_token(
        self, loopback
    ):
        silent = Silent()
        token_endpoint = loopback.serve(silent)
        # Deadline far off: the app read below is still waiting on its token when the
        # researcher's read answers, however slow the machine.
        client = self.app_client(
            loopback, loopback.serve(record(qualifications(1))), token_endpoint, total_timeout=60.0
        )
        outcome = []

        def read_with_app_token():
            try:
                outcome.append(client.read_qualifications(RESEARCHER))
            except OrcidError as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=read_with_app_token)
        waiting.start()
        assert silent.asked.wait(timeout=10)

        found = client.read_qualifications(RESEARCHER, token=RESEARCHER_TOKEN)

        assert [q.put_code for q in found] == [1]
        assert outcome == []  # the token fetch is still in flight
        token_endpoint.close()  # the token endpoint drops the connection
        waiting.join(timeout=10)
        assert [type(result) for result in outcome] == [OrcidUnavailable]

    def test_concurrent_reads_share_one_token_fetch_and_give_up_at_their_deadline(self, loopback):
        silent = Silent()
        token_endpoint = loopback.serve(silent)
        client = self.app_client(
            loopback, loopback.serve(record(qualifications(1))), token_endpoint
        )
        outcomes = []

        def read_with_app_token():
            try:
                outcomes.append(client.read_qualifications(RESEARCHER))
            except OrcidError as exc:
                outcomes.append(exc)

        readers = [threading.Thread(target=read_with_app_token) for _ in range(2)]
        readers[0].start()
        assert silent.asked.wait(timeout=10)
        readers[1].start()  # while the first read's token fetch is in flight
        for reader in readers:
            reader.join(timeout=10)

        assert [type(result) for result in outcomes] == [OrcidUnavailable] * 2
        assert token_endpoint.requests == [("POST", "/oauth/token")]


class TestSignInExchangeDeadline:
    """The callback's code exchange and the revocations run in a web thread: each ends by
    its budget however ORCID drips, so no researcher (or thread) waits on it for long."""

    TOKEN = json.dumps(
        {
            "access_token": RESEARCHER_TOKEN,
            "token_type": "bearer",
            "expires_in": 3600,
            "scope": "/authenticate",
            "orcid": RESEARCHER,
            "name": "Josiah",
        }
    ).encode()

    @staticmethod
    def app(orcid: LoopbackServer, **environ):
        from app import create_app
        from app.saved_record import SavedRecord
        from app.settings import Settings

        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "ORCID_CLIENT_ID": CLIENT_ID,
                "ORCID_CLIENT_SECRET": CLIENT_SECRET,
                "ORCID_BASE_URL": orcid.url,
                **environ,
            }
        )
        return create_app(settings, orcid_reader=SavedRecord({"qualifications": {}}))

    @pytest.mark.parametrize("kind", range(3), ids=STUCK_IDS)
    def test_a_dripped_token_answer_is_a_502_page_at_the_budget(self, loopback, monkeypatch, kind):
        from urllib.parse import parse_qs, urlsplit

        from app.web import login

        monkeypatch.setattr(login, "EXCHANGE_BUDGET", 1.0)
        drip = stuck_inside_one_read(self.TOKEN)[kind]
        client = self.app(loopback.serve(drip)).test_client()
        location = client.get("/login").headers["Location"]
        state = parse_qs(urlsplit(location).query)["state"][0]

        response = client.get(f"/callback?code=c&state={state}")

        assert response.status_code == 502, response.get_data(as_text=True)
        assert "ORCID did not answer" in response.get_data(as_text=True)
        assert not drip.finished.is_set() and drip.sent < 400

    @pytest.mark.parametrize("kind", range(3), ids=STUCK_IDS)
    def test_a_dripped_discovery_document_is_a_502_page_at_the_budget(
        self, loopback, monkeypatch, kind
    ):
        # With openid, /login reads ORCID's discovery document first (once per worker).
        from app.web import login

        monkeypatch.setattr(login, "EXCHANGE_BUDGET", 1.0)
        drip = stuck_inside_one_read(b'{"issuer": "x"}')[kind]
        app = self.app(loopback.serve(drip), ORCID_SCOPE="openid")

        response = app.test_client().get("/login")

        assert response.status_code == 502
        assert "ORCID did not answer" in response.get_data(as_text=True)
        assert not drip.finished.is_set() and drip.sent < 400

    def test_a_dripped_revocation_ends_at_its_timeout(self, loopback, monkeypatch):
        from app.web import login

        monkeypatch.setattr(login, "REVOKE_TIMEOUT", 1.0)
        drip = stuck_inside_one_read(b"{}")[0]
        app = self.app(loopback.serve(drip))

        with app.test_request_context():
            assert login.revoke_at_orcid([RESEARCHER_TOKEN]) is False

        assert not drip.finished.is_set() and drip.sent < 400
