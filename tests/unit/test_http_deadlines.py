"""The socket deadline's own rules, on a real loopback socket (what it cuts is tested on
ORCID's reads, writes and sign-in in tests/integration/test_orcid_client_deadlines.py)."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest
import requests
from urllib3.connectionpool import HTTPConnectionPool

from app import http_deadlines
from app.http_deadlines import DeadlinePassed, ending_by, session_with_deadlines


@pytest.fixture
def slow_server():
    """127.0.0.1: answers every request after ``delay`` seconds, on one kept-alive socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    state = {"delay": 0.0, "connections": 0}
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            state["connections"] += 1
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn):
        with conn, conn.makefile("rb") as reader:
            while not stop.is_set():
                while (line := reader.readline()) not in (b"\r\n", b""):
                    pass
                if not line:
                    return
                if stop.wait(state["delay"]):
                    return
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    yield state
    stop.set()
    thread.join()
    listener.close()


def test_an_exchange_that_ends_in_time_is_untouched_and_its_connection_reused(slow_server):
    session = session_with_deadlines()
    for _ in range(3):
        with ending_by(time.monotonic() + 0.3):
            assert session.get(slow_server["url"], timeout=5).text == "ok"
    time.sleep(0.4)  # every deadline has passed: none may shut the pooled socket now
    assert session.get(slow_server["url"], timeout=5).text == "ok"
    assert slow_server["connections"] == 1


def test_an_exchange_past_its_deadline_is_cut_there_not_at_the_read_timeout(slow_server):
    slow_server["delay"] = 5.0  # within the read timeout: only the deadline stops it
    session = session_with_deadlines()
    started = time.monotonic()
    with pytest.raises(DeadlinePassed), ending_by(started + 0.3):
        session.get(slow_server["url"], timeout=10)
    assert time.monotonic() - started < 4.0  # not the server's 5 s


def test_a_nested_block_ends_by_the_sooner_deadline_and_restores_the_outer(slow_server):
    slow_server["delay"] = 1.0
    session = session_with_deadlines()
    with ending_by(time.monotonic() + 30):
        outer = http_deadlines._current.watch
        with pytest.raises(DeadlinePassed), ending_by(time.monotonic() + 0.2):
            session.get(slow_server["url"], timeout=10)
        assert http_deadlines._current.watch is outer
        slow_server["delay"] = 0.0
        assert session.get(slow_server["url"], timeout=10).text == "ok"
    assert getattr(http_deadlines._current, "watch", None) is None
    # An inner block with a later deadline (a helper's own budget) keeps the outer one.
    slow_server["delay"] = 5.0
    started = time.monotonic()
    with pytest.raises(DeadlinePassed), ending_by(started + 0.3), ending_by(started + 60):
        session.get(slow_server["url"], timeout=10)
    assert time.monotonic() - started < 4.0


def test_a_connection_back_in_the_pool_is_not_cut_by_its_last_blocks_deadline(
    slow_server, monkeypatch
):
    # A's exchange ends and its connection goes back to the pool; A's block goes on past
    # its deadline. B takes the connection and is held a moment before it sends (as a
    # thread switch could): A's deadline must not cut B's exchange, nor count as A's.
    session = session_with_deadlines()
    taken = threading.Event()
    real_get_conn = HTTPConnectionPool._get_conn

    def get_conn(pool, timeout=None):
        connection = real_get_conn(pool, timeout)
        if threading.current_thread().name == "B":
            taken.set()
            time.sleep(0.4)
        return connection

    monkeypatch.setattr(HTTPConnectionPool, "_get_conn", get_conn)
    outcomes = {}

    def a():
        try:
            with ending_by(time.monotonic() + 0.2):
                session.get(slow_server["url"], timeout=5)
                taken.wait(timeout=10)
                time.sleep(0.4)  # the block's own work, past its deadline
            outcomes["A"] = "ok"
        except Exception as exc:
            outcomes["A"] = type(exc).__name__

    def b():
        time.sleep(0.1)
        try:
            with ending_by(time.monotonic() + 30):
                outcomes["B"] = session.get(slow_server["url"], timeout=5).text
        except Exception as exc:
            outcomes["B"] = type(exc).__name__

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert outcomes == {"A": "ok", "B": "ok"}
    assert slow_server["connections"] == 1


def test_a_proxy_dripping_its_tunnel_answer_is_cut_at_the_deadline():
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def drip():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)  # CONNECT orcid.example:443
            conn.sendall(b"HTTP/1.1 200 Connection established\r\nX-Drip: ")
            while not done.wait(0.2):
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(DeadlinePassed), ending_by(started + 0.5):
            session_with_deadlines().get(
                "https://orcid.example/", timeout=(3, 3), proxies={"https": proxy}
            )
        assert time.monotonic() - started < 2.5  # not the 3 s timeout, nor the drip's end
    finally:
        done.set()
        thread.join()
        listener.close()


def test_a_tls_in_tls_socket_is_shut_down_through_its_wrappers():
    # Through an https:// proxy urllib3's socket is an SSLTransport over the real one.
    ours, peer = socket.socketpair()
    with ours, peer:
        wrapped = SimpleNamespace(socket=SimpleNamespace(socket=ours))
        watch = http_deadlines._Watch(time.monotonic())
        http_deadlines._cut(SimpleNamespace(sock=wrapped), watch)
        peer.settimeout(5)
        assert peer.recv(1) == b""  # our end was shut down
        assert watch.cut


def test_the_reaper_outlives_an_error_in_one_cut(slow_server, monkeypatch, caplog):
    real_cut = http_deadlines._cut
    calls = []

    def failing_once(connection, watch):
        calls.append(watch)
        if len(calls) == 1:
            raise TypeError("a socket of a kind never seen")
        real_cut(connection, watch)

    monkeypatch.setattr(http_deadlines, "_cut", failing_once)
    slow_server["delay"] = 1.0
    session = session_with_deadlines()
    with ending_by(time.monotonic() + 0.2):
        session.get(slow_server["url"], timeout=10)  # not cut: the cut failed
    assert "could not stop an HTTP exchange" in caplog.text
    with pytest.raises(DeadlinePassed), ending_by(time.monotonic() + 0.2):
        session.get(slow_server["url"], timeout=10)
    assert len(calls) == 2


def test_blocks_that_end_in_time_leave_little_behind_long_before_their_deadlines():
    # ORCID reads end in milliseconds, their deadlines seconds away: the heap must hold
    # about the blocks under way, not every block of the last few seconds.
    reaper = http_deadlines._the_reaper()
    for _ in range(1000):
        with ending_by(time.monotonic() + 60):
            pass
    with reaper.lock:
        assert len(reaper._heap) < 130


def test_a_block_whose_exchange_failed_is_not_cut_at_its_deadline_after(slow_server):
    # The connection was closed by the failure: nothing is under way at the deadline.
    session = session_with_deadlines()
    with ending_by(time.monotonic() + 0.2):
        with pytest.raises(requests.ConnectionError):
            session.get("http://127.0.0.1:9/", timeout=1)  # discard port: refused
        time.sleep(0.4)  # the block goes on past its deadline


def test_an_error_in_a_block_the_deadline_did_not_cut_is_raised_as_it_is():
    with pytest.raises(KeyError), ending_by(time.monotonic() - 1):
        raise KeyError("not a transport error")
