"""The socket deadline's own rules, on a real loopback socket (what it cuts is tested on
ORCID's reads, writes and sign-in in tests/integration/test_orcid_client_deadlines.py)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

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


def test_a_nested_block_keeps_its_own_deadline_and_restores_the_outer(slow_server):
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


def test_blocks_that_end_in_time_leave_nothing_behind():
    reaper = http_deadlines._the_reaper()
    for _ in range(1000):
        with ending_by(time.monotonic() + 0.05):
            pass
    time.sleep(0.3)
    with reaper._condition:
        assert reaper._heap == []


def test_an_error_in_a_block_the_deadline_did_not_cut_is_raised_as_it_is():
    with pytest.raises(KeyError), ending_by(time.monotonic() - 1):
        raise KeyError("not a transport error")
