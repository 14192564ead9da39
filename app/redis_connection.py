"""REDIS_URL: which Redis to use (one server, a primary watched by Sentinel, or a
Cluster) and a redis-py client for it.

The forms, beside redis-py's own ``redis://``, ``rediss://`` and ``unix://``::

    redis+sentinel://[[user]:password@]host1:26379,host2:26379/mymaster[/db][?options]
    redis+cluster://[[user]:password@]host1:7000,host2:7001[?options]

The password in the URL is the Redis servers' (primary and replicas, or every cluster
node). Options, all optional:

- ``sentinel_password`` and ``sentinel_username``: the sentinels' own credentials
  (``requirepass`` in sentinel.conf), when they differ from none;
- ``wait_replicas``: how many replicas a new session must reach before sign-in
  completes (Redis ``WAIT``, for at most ``WAIT_TIMEOUT``): 1 by default with
  Sentinel, so that a session outlives a failover; 0 otherwise.

Parsing uses the standard library only, so settings can check a URL without loading
redis-py; ``connect()`` builds redis-py's own clients (``Sentinel.master_for``,
``RedisCluster``), which find a promoted replica or a moved slot by themselves. No
message from here ever holds a password.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

logger = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
SENTINEL_PORT, SERVER_PORT = 26379, 6379
# Milliseconds a session write waits for its replicas before sign-in goes ahead anyway.
WAIT_TIMEOUT = 250
_OPTIONS = {"sentinel_password", "sentinel_username", "wait_replicas"}
# redis-py's URL options that would undo the timeouts and retries the service sets.
_OURS_TO_SET = {
    "socket_timeout",
    "socket_connect_timeout",
    "timeout",
    "retry_on_timeout",
    "retry_on_error",
}
# scheme://user:password@ (both optional), up to the authority's last @ (greedy).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/?#@]*)(:[^/?#]*)?@")
_SECRET_OPTION = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)


class RedisUrlError(ValueError):
    """A REDIS_URL that cannot be used; the message never contains a password."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a REDIS_URL names.

    ``kind`` is ``server`` (redis-py parses ``url`` itself), ``sentinel`` or ``cluster``.
    """

    kind: str
    url: str  # for a server: the URL as redis-py takes it, without our own options
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    wait_replicas: int = 0

    def __repr__(self) -> str:  # the dataclass default would print the passwords
        return f"RedisTarget({self.kind}, {redact(self.url)})"


def redact(url: str) -> str:
    """The URL with its password, and any ``sentinel_password``, replaced by ``***``.

    A password with an unencoded "/", "?" or "#" breaks the URL's shape, so the pattern
    finds no user part: then everything from "://" to the last "@" is hidden.
    """
    shown = _USERINFO.sub(
        lambda m: m[1] + (m[2] + ":***" if m[3] is not None else "***") + "@", url
    )
    if shown == url and "@" in url and "://" in url:
        start, at = url.index("://") + 3, url.rindex("@")
        if at > start:
            shown = url[:start] + "***" + url[at:]
    return _SECRET_OPTION.sub(r"\1***", shown)


def parse_redis_url(url: str) -> RedisTarget:
    """What ``url`` names.

    :raises RedisUrlError: for an unknown scheme, no hosts, a bad port, a missing
        Sentinel service name, a database other than 0 on a Cluster, or an unknown option.
    """
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RedisUrlError(f"{shown!r} is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RedisUrlError(f"{shown!r} needs a scheme: {', '.join(s + '://' for s in SCHEMES)}")
    if "@" in url and "@" not in parts.netloc:
        # A password's unencoded "/", "?" or "#" ends the hosts inside it: what would
        # read as a host may be part of it, so nothing after here quotes one.
        raise RedisUrlError(
            f"{shown!r} has an '@' outside its user part: in a password write '/', '?' "
            "and '#' as %2F, %3F and %23 (and '@' elsewhere as %40)"
        )
    if parts.fragment or url.endswith("#"):
        # A "#" in a password ends the URL there: the password would be cut, unsaid.
        raise RedisUrlError(f"{shown!r} has a '#': write it as %23 in a password")
    if overrides := sorted(_OURS_TO_SET & parse_qs(parts.query).keys()):
        raise RedisUrlError(
            f"{shown!r}: {', '.join(overrides)} is the service's to set (it keeps a check's "
            "wait on Redis to a fraction of a second): take it out of the URL"
        )
    options = _options(parts.query, shown, strict=scheme.startswith("redis+"))
    if "wait_replicas" in options:
        raw = options["wait_replicas"]
        if not raw.isdigit() or int(raw) > 16:
            raise RedisUrlError(f"{shown!r}: wait_replicas must be a number from 0 to 16")
    if scheme in ("redis", "rediss", "unix"):
        if scheme != "unix" and not parts.hostname:
            raise RedisUrlError(f"{shown!r} names no host")
        if scheme != "unix":
            _port(parts.netloc.rsplit("@", 1)[-1], SERVER_PORT, shown)
        if options:  # redis-py reads the query itself: pass on only what is its own
            rest = "&".join(
                p for p in parts.query.split("&") if p and p.split("=", 1)[0] not in _OPTIONS
            )
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
            if scheme == "unix" and not parts.netloc:
                url = url.replace("unix:", "unix://", 1)  # urlunsplit drops an empty //
        return RedisTarget("server", url, wait_replicas=int(options.get("wait_replicas", 0)))
    username, password, hostlist = _userinfo(parts.netloc)
    default_port = SENTINEL_PORT if scheme == "redis+sentinel" else SERVER_PORT
    hosts = tuple(_host(h, default_port, shown) for h in hostlist.split(",") if h.strip())
    if not hosts:
        raise RedisUrlError(f"{shown!r} names no host")
    segments = [s for s in parts.path.split("/") if s]
    common = {
        "url": url,
        "hosts": hosts,
        "username": username,
        "password": password,
    }
    if scheme == "redis+cluster":
        if segments not in ([], ["0"]):
            raise RedisUrlError(f"{shown!r}: a Cluster has database 0 only (no path)")
        if {"sentinel_password", "sentinel_username"} & options.keys():
            raise RedisUrlError(f"{shown!r}: a Cluster has no sentinels")
        if options.get("wait_replicas", "0") != "0":
            # NOTE: WAIT counts one connection's writes, and a cluster pipeline does not
            # say which node's connection a keyless command goes to.
            raise RedisUrlError(f"{shown!r}: wait_replicas is for one server or Sentinel")
        return RedisTarget("cluster", wait_replicas=int(options.get("wait_replicas", 0)), **common)
    if not segments:
        raise RedisUrlError(
            f"{shown!r} names no service: redis+sentinel://host:26379,.../SERVICE[/db]"
        )
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise RedisUrlError(f"{shown!r}: the path is /SERVICE or /SERVICE/DB (a number)")
    return RedisTarget(
        "sentinel",
        service=unquote(segments[0]),
        db=int(segments[1]) if len(segments) == 2 else 0,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        wait_replicas=int(options.get("wait_replicas", 1)),
        **common,
    )


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as REDIS_URL, or None when it can."""
    try:
        parse_redis_url(url)
    except RedisUrlError as exc:
        return str(exc)
    return None


def _options(query: str, shown: str, strict: bool) -> dict[str, str]:
    """Our options from the query; ``strict``: anything else is a problem (for our own
    forms; redis-py reads the rest of a server URL's query itself)."""
    given = parse_qs(query, keep_blank_values=True)
    found = {name: values[-1] for name, values in given.items() if name in _OPTIONS}
    unknown = sorted(given.keys() - _OPTIONS)
    if strict and unknown:
        raise RedisUrlError(
            f"{shown!r}: unknown option {', '.join(unknown)} (known: {', '.join(sorted(_OPTIONS))})"
        )
    return found


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    if "@" not in netloc:
        return None, None, netloc
    userinfo, hosts = netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if password else None, hosts


def _host(text: str, default_port: int, shown: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise RedisUrlError(f"{shown!r}: {text!r} is not host:port")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise RedisUrlError(f"{shown!r}: {text!r} names no host")
    return host, _port_number(port, default_port, shown, text)


def _port(hostport: str, default: int, shown: str) -> int:
    if hostport.startswith("["):
        port = hostport.partition("]")[2].removeprefix(":")
    else:
        port = hostport.rpartition(":")[2] if ":" in hostport else ""
    return _port_number(port, default, shown, hostport)


def _port_number(port: str, default: int, shown: str, text: str) -> int:
    if port == "":
        return default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"{shown!r}: {text!r} has no valid port (1 to 65535)")
    return int(port)


# -- clients ---------------------------------------------------------------------------


def connect(target: RedisTarget | str, *, socket_timeout: float, connect_timeout: float, retry):
    """A redis-py client for ``target``, with these timeouts and this ``Retry``.

    One server: ``redis.Redis``. Sentinel: ``Sentinel(...).master_for(service)``, whose
    pool asks the sentinels for the primary on each new connection, so after a
    failover the retry reaches the promoted replica. Cluster: ``RedisCluster``, which
    follows MOVED and ASK itself; it is built on first use, as redis-py builds it by
    reading the slot map, so a service can start while the cluster is unreachable.

    :raises RedisUrlError: for a URL ``parse_redis_url`` refuses.
    """
    import redis

    if isinstance(target, str):
        target = parse_redis_url(target)
    common = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 30,
        "decode_responses": True,
    }
    if target.kind == "server":
        return redis.Redis.from_url(target.url, retry=retry, **common)
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            list(target.hosts),
            sentinel_kwargs={
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                "username": target.sentinel_username,
                "password": target.sentinel_password,
            },
        )
        client = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            retry=retry,
            **common,
        )
        _primary_watch().add(client.connection_pool)
        return client
    return LazyCluster(
        startup=list(target.hosts),
        username=target.username,
        password=target.password,
        retry=retry,
        **common,
    )


# Seconds between asking the sentinels who the primary is.
PRIMARY_CHECK = 1.0


class _PrimaryWatch:
    """Asks the sentinels once a second which server is the primary, for every Sentinel
    pool in the process, and drops a pool's connections when it changed.

    NOTE: redis-py asks only when it opens a connection or one fails. A primary that
    hung (a stalled VM, a healed network split) while Sentinel promoted a replica
    answers again, as a primary, on the connections kept open to it, until Sentinel
    demotes it seconds later: a sign-out or revocation made on the new primary meanwhile
    would not count here. Connections in use are dropped too, so a command in flight
    there does not finish on the old primary (redis-py retries it once, on the new one).
    The pools survive a fork (gunicorn's preloaded app made them); the thread does not,
    so each child starts its own.
    """

    def __init__(self):
        self._pools: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._after_fork)

    def add(self, pool) -> None:
        with self._lock:
            self._pools.add(pool)
            self._start()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by a thread
        self._thread, self._pid = None, os.getpid()
        if len(self._pools):
            self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="sentinel-primary-watch", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(PRIMARY_CHECK)
            with self._lock:
                pools = list(self._pools)
            for pool in pools:
                try:
                    check_primary(pool)
                except Exception:  # this thread must outlive any one pool's surprise
                    logger.exception("could not ask the sentinels for the primary")


def check_primary(pool) -> None:
    """Ask the sentinels for ``pool``'s primary; drop every connection if it moved."""
    import redis

    known = pool.master_address
    try:
        now = pool.get_master_address()
    except (redis.RedisError, OSError) as exc:
        logger.debug("no sentinel said which server is the primary: %s", exc)
        return  # the next command asks (and fails, and falls back) itself
    if known is not None and now != known:
        logger.warning("the Redis primary moved (Sentinel): reconnecting")
        pool.disconnect(inuse_connections=True)


_watch: _PrimaryWatch | None = None
_watch_lock = threading.Lock()


def _primary_watch() -> _PrimaryWatch:
    global _watch
    with _watch_lock:
        if _watch is None:
            _watch = _PrimaryWatch()
        return _watch


class LazyCluster:
    """A ``RedisCluster``, made on first use: redis-py's reads the slot map when made.

    Until one is made, every use raises ``redis.ConnectionError`` (a RedisError, which
    the store and the log already treat as Redis being down) and the next use tries
    again. Everything else is the ``RedisCluster``'s own.
    """

    def __init__(self, startup: list[tuple[str, int]], **kwargs):
        self._startup, self._kwargs = startup, kwargs
        self._client = None
        self._guard = threading.Lock()

    @property
    def client(self):
        """The ``RedisCluster``; :raises redis.ConnectionError: while none answers."""
        if self._client is not None:
            return self._client
        import redis
        from redis.cluster import ClusterNode

        with self._guard:
            if self._client is None:
                try:
                    self._client = _cluster_class()(
                        startup_nodes=[ClusterNode(host, port) for host, port in self._startup],
                        **self._kwargs,
                    )
                except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                    # NOTE: redis-py names the nodes it tried, never the password.
                    raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from None
        return self._client

    def __getattr__(self, name):
        return getattr(self.client, name)

    def __repr__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self._startup)
        return f"LazyCluster({hosts})"


@functools.cache
def _cluster_class():
    """``RedisCluster``, raising a RedisError where redis-py raises its bare exception."""
    import redis
    from redis.cluster import RedisCluster

    class Cluster(RedisCluster):
        # NOTE: with every node down, redis-py raises RedisClusterException, which is no
        # RedisError: every caller here (store, log, write tokens) treats a RedisError as
        # Redis being down, and this one would escape them as a 500.
        def execute_command(self, *args, **kwargs):
            try:
                return super().execute_command(*args, **kwargs)
            except redis.exceptions.RedisClusterException as exc:
                raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc

    return Cluster
