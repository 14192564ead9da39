"""A deadline for a whole HTTP exchange, enforced on the socket.

Socket timeouts bound each ``recv``, not an answer: http.client reads headers line by
line, and urllib3 loops inside one ``read1`` while a gzip header's comment or a chunk-size
line arrives. A server that sends a byte a little faster than the read timeout holds the
reading thread there for as long as it likes, whatever deadline its caller keeps. The
caller answers on time (it waits no longer than its deadline), but the thread stays stuck:
enough such reads and every ORCID reader (or web thread) is held.

So a session made by :func:`session_with_deadlines` watches each connection used inside
``ending_by(deadline)``: when the deadline passes, one thread per process shuts that
socket down, which ends a blocked ``recv`` (a proxy tunnel's too) at once.
``ending_by`` then raises :class:`DeadlinePassed` (a ``requests`` Timeout and a urllib3
``HTTPError``), whatever the exchange made of the cut: http.client takes headers cut
short as ended, and urllib3 a cut chunk-size line as the last chunk (``000``), so a
shut-down answer can look complete, or merely malformed.

NOTE: three waits cannot be cut. A name lookup (``getaddrinfo``): the resolver's own
timeouts bound it. A TLS handshake: its socket is handed over to the SSL object it makes,
out of reach until the handshake ends; CPython bounds the whole handshake by the socket's
timeout (the connect timeout). And SOCKS proxies, which keep their own connections.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
import urllib3
from authlib.integrations.requests_client import OAuth2Session
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

logger = logging.getLogger(__name__)

_current = threading.local()  # .watch: the innermost ending_by() of this thread


class DeadlinePassed(requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
    """The deadline passed while an exchange was under way; its socket was shut down.

    Both libraries' timeout, so a handler of either kind of transport error takes it.
    """


class _Watch:
    __slots__ = ("connection", "cut", "deadline", "done", "expired")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.connection: HTTPConnection | None = None  # the one it is using, if any
        self.expired = False  # the deadline passed before the block ended
        self.cut = False  # and one of the block's exchanges was (or will be) stopped for it
        self.done = False

    def shut(self) -> None:
        """The deadline passed: shut down the socket of the connection this block is
        using. Under the reaper's lock, as are ``done`` and the connections' tags, so a
        finished block, or one whose connection went back to the pool, is left alone."""
        if self.done:
            return
        self.expired = True  # first: a connection tagged after this shuts itself
        connection = self.connection
        if connection is None or connection._deadline_watch is not self:
            return
        if connection.sock is None and not connection._deadline_connecting:
            return  # closed after a failed exchange: nothing under way to stop
        _cut(connection, self)


def _cut(connection: HTTPConnection, watch: _Watch) -> None:
    """Stop ``watch``'s exchange on ``connection``: shut its socket down now, or, before
    it has one, mark it so that the connection shuts it as soon as it has."""
    watch.cut = True
    sock = connection.sock
    # Through an https:// proxy the socket is TLS inside TLS: an SSLTransport over the
    # real one. NOTE: the plain socket's shutdown even for TLS: SSLSocket.shutdown also
    # drops its SSL object, which the reading thread may be using.
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class _Reaper:
    """One thread per process that shuts sockets down at their watches' deadlines."""

    def __init__(self):
        self._pid = os.getpid()
        self.lock = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()  # ties in deadline never compare watches
        self._finished = 0  # done watches still in the heap
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self.lock.notify()  # a sooner deadline than the thread sleeps to

    def finish(self, watch: _Watch) -> None:
        with self.lock:
            watch.done = True
            watch.connection = None
            self._finished += 1
            # Most blocks end long before their deadline: drop them in bulk, so the heap
            # holds about the blocks under way, not every block of the last few seconds.
            if self._finished > 64 and self._finished * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._finished = 0

    def _run(self) -> None:
        with self.lock:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                    self._finished -= 1
                if not self._heap:
                    self.lock.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self.lock.wait(wait)
                    continue
                try:
                    heapq.heappop(self._heap)[2].shut()
                except Exception:  # this thread must outlive any one socket
                    logger.exception("could not stop an HTTP exchange at its deadline")


_reaper: _Reaper | None = None
_reaper_lock = threading.Lock()


def _the_reaper() -> _Reaper:
    # Made on first use, and again in a forked child: a thread does not survive fork.
    global _reaper
    with _reaper_lock:
        if _reaper is None or _reaper._pid != os.getpid():
            _reaper = _Reaper()
        return _reaper


@contextmanager
def ending_by(deadline: float) -> Iterator[None]:
    """HTTP exchanges this thread starts inside end by ``deadline`` (monotonic), or by an
    enclosing block's if that is sooner: their socket is shut down then, on sessions from
    :func:`session_with_deadlines`.

    Read the whole answer inside (``stream=True`` bodies included): a body read after the
    block is no longer watched.

    :raises DeadlinePassed: the deadline stopped an exchange (whatever the block raised
        then is its cause: what was read may be cut short).
    """
    outer = getattr(_current, "watch", None)
    watch = _Watch(deadline if outer is None else min(deadline, outer.deadline))
    _current.watch = watch
    reaper = _the_reaper()
    reaper.add(watch)
    try:
        yield
    except Exception as exc:
        if _finish(reaper, watch, outer):
            raise DeadlinePassed("the deadline passed during an exchange") from exc
        raise
    except BaseException:  # an exit or interrupt stays what it is
        _finish(reaper, watch, outer)
        raise
    if _finish(reaper, watch, outer):
        raise DeadlinePassed("the deadline passed during an exchange")


def _finish(reaper: _Reaper, watch: _Watch, outer: _Watch | None) -> bool:
    """End the block's watch; whether the deadline stopped one of its exchanges."""
    reaper.finish(watch)
    _current.watch = outer
    return watch.cut


class _Watched:
    """Connections that put themselves under the current thread's watch as they connect
    and as each request goes out, and leave it as they go back to the pool."""

    _deadline_watch: _Watch | None = None
    _deadline_connecting = False  # in connect(): no socket yet, or not yet as self.sock

    def _tag(self) -> None:
        watch = getattr(_current, "watch", None)
        with _the_reaper().lock:
            self._deadline_watch = watch
            if watch is not None:
                watch.connection = self
                if watch.expired:
                    _cut(self, watch)  # the deadline passed already: fail at once

    def connect(self):
        self._tag()  # the TCP connect and a proxy's tunnel are watched too
        self._deadline_connecting = True
        try:
            super().connect()
        finally:
            self._deadline_connecting = False
        watch = self._deadline_watch
        if watch is not None and watch.expired:
            _cut(self, watch)  # the deadline passed while no socket was there to shut

    def request(self, *args, **kwargs):
        self._tag()
        return super().request(*args, **kwargs)

    def getresponse(self):
        watch = self._deadline_watch
        if watch is not None and watch.expired:
            _cut(self, watch)  # connected after the deadline passed: fail at once
        return super().getresponse()


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Untags:
    def _put_conn(self, conn):
        if conn is not None:
            with _the_reaper().lock:
                conn._deadline_watch = None  # its block's deadline no longer applies
        super()._put_conn(conn)


class _WatchedHTTPPool(_Untags, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_Untags, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections watched inside :func:`ending_by`."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if proxy.lower().startswith(("http://", "https://")):  # SOCKS pools stay their own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def mount_deadlines(session: requests.Session, pool_size: int = 10) -> requests.Session:
    """``session`` with HTTP and HTTPS through a :class:`DeadlineAdapter`."""
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def session_with_deadlines(pool_size: int = 10) -> requests.Session:
    """A requests session whose exchanges inside :func:`ending_by` end by its deadline."""
    return mount_deadlines(requests.Session(), pool_size)


class DeadlineOAuth2Session(OAuth2Session):
    """Authlib's requests session, with its exchanges watched inside :func:`ending_by`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        mount_deadlines(self, pool_size=1)
