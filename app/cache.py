"""Where decisions, sessions and locks live: Redis, or this process's memory.

Keys carry the policy version, so a policy change never serves an old decision. A
Redis fault never reaches a caller: a read is a miss, a write is skipped, a lock is
taken locally, each with a warning logged at most once per interval. Decisions are
then kept in this process's memory until Redis answers again.

Sessions fail closed: while Redis is down, only a session this process saw in Redis
within the last ``SESSION_GRACE`` seconds (one), and did not see end, still counts. A
logout handled by another worker, or a steward's revocation, reaches this process only
through Redis; so a sighting is trusted no longer than answers are (forward_auth's
``RECHECK_AFTER``), and an outage longer than a second signs everyone out here rather
than honour a session that may have ended. Fewer sessions honoured during an outage is
the price; a signed-out session honoured would let the wrong person in. Sign-in
states fail closed too: while Redis is down no sign-in starts or completes, because the
worker that answers ORCID's callback may not be the one that sent the researcher there.

Key layout (docs/redis.md): everything about one researcher carries their iD as a Redis
Cluster hash tag, ``gk:{<iD>}:...``, so each multi-key command of a request (``/auth``'s
MGET of session and decision, a sign-in's session and index, a revocation) touches one
slot, on one node. A researcher's decisions are listed in a set beside them, so that
revoking them deletes in that slot instead of scanning every node.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.printable import printable
from app.redis_connection import WAIT_TIMEOUT, LazyCluster, connect, parse_redis_url

logger = logging.getLogger(__name__)

PREFIX = "gk:"
UNAVAILABLE = object()  # "Redis cannot say, but this session was seen there lately"


_FORGETTINGS = itertools.count(1)  # MemoryStore's generations, never repeated


class NotReplicated(Exception):
    """An ending reached the Redis primary, but not ``wait_replicas`` replicas in time.

    Not a RedisError: Redis answered, so it is not taken for down. ``taken`` is what the
    ending took from the primary (the session records), for the caller to finish with.
    """

    def __init__(self, message: str = "", taken=None):
        super().__init__(message)
        self.taken = taken


# Seconds a session confirmed by Redis still counts once Redis stops answering: no more
# than a remembered /auth answer goes unchecked, so a logout elsewhere is honoured as late.
SESSION_GRACE = 1.0
# The single-flight lock is a lease this long, renewed by its holder every third of it:
# a holder that dies (a killed worker) frees the record for another within a lease.
LOCK_LEASE = 2.0
# What a Redis client raises: RedisCluster raises RedisClusterException, not a RedisError,
# when it cannot map a slot to a node (every node down, a slot map being rebuilt).
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)
# What /readyz writes to learn that Redis takes writes, and how long it keeps it.
READY_KEY, READY_PROBE_MS = f"{PREFIX}ready", 5000
# How long a researcher's count of forgotten decisions is kept: far longer than a read.
GENERATION_TTL = 86_400
# Store a decision and index it, unless the researcher's count of forgettings moved since
# the decision's ORCID read began (ARGV[3]; "" stores regardless). The index lives as
# long as its longest-lived decision: NX gives a new index this decision's expiry, GT
# lengthens an older one, never shortens. Returns the index's size, or -1 if not stored.
_PUT_DECISION = """
if ARGV[3] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[3] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[2], 'GT')
return redis.call('SCARD', KEYS[2])
"""
# A researcher's decision index is pruned of expired keys once it holds more than this
# (each policy version adds a key per dataset checked).
INDEX_PRUNE_AT = 64


def researcher_prefix(orcid: str) -> str:
    """``gk:{<iD>}:``, the start of every key about one researcher: one cluster slot."""
    return f"{PREFIX}{{{orcid}}}:"


def decision_key(version: str, orcid: str, dataset: str) -> str:
    return f"{researcher_prefix(orcid)}d:{version}:{dataset}"


def generation_key(orcid: str) -> str:
    """How many times the researcher's decisions were forgotten (``forget_orcid``)."""
    return f"{researcher_prefix(orcid)}g"


def decision_index_key(orcid: str) -> str:
    """The set of one researcher's decision keys, so that revoking them needs no SCAN."""
    return f"{researcher_prefix(orcid)}di"


def session_key(orcid: str, sid: str) -> str:
    """A session, under the iD its signed cookie carries (the cookie's iD picks the slot)."""
    return f"{researcher_prefix(orcid)}s:{sid}"


def session_index_key(orcid: str) -> str:
    """The set of one researcher's session ids, so that all of them can be ended at once."""
    return f"{researcher_prefix(orcid)}si"


def token_key(digest: str) -> str:
    """A personal access token's record, under its digest (app/access_tokens.py)."""
    return f"{PREFIX}t:{{{digest}}}"


def token_used_key(digest: str) -> str:
    """When the token last passed /auth (beside its record: the same slot)."""
    return f"{PREFIX}t:{{{digest}}}:u"


def token_index_key(orcid: str) -> str:
    """The set of one researcher's token digests: listed, and revoked all at once."""
    return f"{researcher_prefix(orcid)}ti"


def _seen_key(digest: str) -> str:
    # Tokens share the sessions' memory of sightings; a session id never has a colon.
    return f"t:{digest}"


def state_key(key: str) -> str:
    return f"{PREFIX}oauth:{key}"


def session_record(orcid: str, token: str | None, expires: float | None = None) -> str:
    """What a session keeps server-side: the iD, the ORCID token never put in a cookie,
    and when the session ends (Unix time; its key expires then too)."""
    record = {"orcid": orcid, "token": token}
    if expires is not None:
        record["expires"] = expires
    return json.dumps(record)


def _record_value(stored, name: str):
    if not isinstance(stored, str):
        return None  # no session, or UNAVAILABLE
    try:
        return json.loads(stored).get(name)
    except (ValueError, AttributeError):
        return None


def _record_field(stored, name: str) -> str | None:
    value = _record_value(stored, name)
    return value if isinstance(value, str) else None


def session_token(stored) -> str | None:
    """The ORCID token from a stored session record (None when absent or unreadable)."""
    # None for UNAVAILABLE too: read ORCID without the researcher's token.
    return _record_field(stored, "token")


def session_expires(stored) -> float | None:
    """When a stored session ends (Unix time); None when unknown (an older record,
    UNAVAILABLE, or unreadable)."""
    value = _record_value(stored, "expires")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        value = float(value)  # an int past any float raises
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def session_orcid(stored) -> str | None:
    """The iD a stored session record was started for (None when absent or unreadable)."""
    return _record_field(stored, "orcid")


def session_belongs_to(stored, orcid: str) -> bool:
    """Whether a stored session is ``orcid``'s: the cookie's iD must be the session's.

    NOTE: UNAVAILABLE (Redis is down, and this process saw the session there within
    ``SESSION_GRACE``) counts, as it does for every session check: the record cannot be
    read to compare, and the cookie's signature still holds.
    """
    if stored is UNAVAILABLE:
        return True
    return stored is not None and session_orcid(stored) == orcid


class MemoryStore:
    """A store in this process's memory: for one process only, and as Redis's fallback."""

    def __init__(self, max_entries: int = 100_000, clock=time.time):
        self._data: OrderedDict[str, tuple[object, float]] = OrderedDict()
        self._generations: dict[str, int] = {}  # iD -> forget_orcid count
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._max = max_entries
        self._clock = clock

    # -- plain values with expiry ------------------------------------------------------

    def _get(self, key: str):
        with self._guard:
            found = self._data.get(key)
            if found is None:
                return None
            value, expires = found
            if expires <= self._clock():
                del self._data[key]
                return None
            return value

    def _set(self, key: str, value, ttl: float):
        with self._guard:
            self._set_held(key, value, ttl)

    def _set_held(self, key: str, value, ttl: float):
        """``_set`` for a caller that holds ``_guard`` already."""
        self._data[key] = (value, self._clock() + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def _delete(self, key: str):
        with self._guard:
            self._data.pop(key, None)

    # -- the store interface -------------------------------------------------------------

    def lookup(self, sid: str, version: str, orcid: str, dataset: str):
        """(session JSON or None, decision JSON or None) in one go."""
        return self._get(session_key(orcid, sid)), self._get(decision_key(version, orcid, dataset))

    def get_decision(self, version, orcid, dataset) -> str | None:
        return self._get(decision_key(version, orcid, dataset))

    def generation(self, orcid: str) -> str:
        """The researcher's count of forgettings, read before a decision's ORCID read."""
        return str(self._generations.get(orcid, 0))

    def put_decision(
        self, version, orcid, dataset, value: str, ttl: float, generation: str | None = None
    ):
        """Keep a decision, unless the researcher's decisions were forgotten since
        ``generation`` was read (a read begun before then may be out of date)."""
        with self._guard:  # the check and the write at once: a forget cannot come between
            if generation is not None and generation != str(self._generations.get(orcid, 0)):
                return
            self._set_held(decision_key(version, orcid, dataset), value, ttl)

    def delete_decision(self, version, orcid, dataset):
        self._delete(decision_key(version, orcid, dataset))

    def get_session(self, sid: str, orcid: str):
        return self._get(session_key(orcid, sid))

    def put_session(self, sid: str, value: str, ttl: float) -> bool:
        orcid = _researcher_of(value)
        with self._guard:
            now = self._clock()
            # The index outlives every session in it: each sign-in renews it in full.
            index = session_index_key(orcid)
            found = self._data.get(index)
            sids = found[0] if found is not None and found[1] > now else set()
            self._data[index] = (sids | {sid}, now + ttl)
            self._data.move_to_end(index)
            self._data[session_key(orcid, sid)] = (value, now + ttl)
            self._data.move_to_end(session_key(orcid, sid))
            while len(self._data) > self._max:
                self._data.popitem(last=False)
        return True

    def delete_session(self, sid: str, orcid: str) -> bool:
        self._delete(session_key(orcid, sid))
        return True

    def take_sessions_of(self, orcid: str) -> list[str] | None:
        """End every session of one researcher; returns their records (for the tokens)."""
        with self._guard:
            found = self._data.pop(session_index_key(orcid), None)
            now = self._clock()
            records = []
            for sid in found[0] if found is not None else ():
                entry = self._data.pop(session_key(orcid, sid), None)
                if entry is not None and entry[1] > now:
                    records.append(entry[0])
        return records

    def session_token_of(self, orcid: str) -> str | None:
        """The ORCID token of one of the researcher's live sessions, if any has one."""
        for sid in sorted(self._get(session_index_key(orcid)) or ()):
            token = session_token(self._get(session_key(orcid, sid)))
            if token:
                return token
        return None

    def forget_orcid(self, orcid: str) -> int:
        """Drop every cached decision about one researcher; returns how many."""
        start = researcher_prefix(orcid) + "d:"
        with self._guard:
            if len(self._generations) >= 100_000:
                self._generations.clear()
            # From one count for the whole process: after a clear, no researcher's value
            # comes back to one an older read saw.
            self._generations[orcid] = next(_FORGETTINGS)
            doomed = [k for k in self._data if k.startswith(start)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def forget_decisions(self, orcid: str) -> bool:
        """``forget_orcid`` for the web edge: False when the store could not confirm it."""
        self.forget_orcid(orcid)
        return True

    def forget_all_decisions(self):
        """Drop every cached decision (the fallback's, once Redis answers again)."""
        with self._guard:
            for key in [k for k in self._data if _is_decision_key(k)]:
                del self._data[key]

    # -- personal access tokens ------------------------------------------------------------

    def put_token(self, digest: str, orcid: str, record: str, ttl: float) -> bool:
        with self._guard:
            now = self._clock()
            index = token_index_key(orcid)
            found = self._data.get(index)
            digests = found[0] if found is not None and found[1] > now else set()
            until = max(found[1] if found is not None else 0, now + ttl)
            self._data[index] = (digests | {digest}, until)
            self._data[token_key(digest)] = (record, now + ttl)
        return True

    def get_token(self, digest: str):
        return self._get(token_key(digest))

    def token_lookup(self, digest: str, version: str, orcid: str, dataset: str):
        """(token record or None, decision or None) in one go."""
        return self._get(token_key(digest)), self._get(decision_key(version, orcid, dataset))

    def tokens_of(self, orcid: str) -> list[tuple[str, str, str | None]] | None:
        """(digest, record, last used) of each live token of one researcher."""
        found = self._get(token_index_key(orcid)) or set()
        listed = []
        for digest in sorted(found):
            record = self._get(token_key(digest))
            if record is not None:
                listed.append((digest, record, self._get(token_used_key(digest))))
        return listed

    def delete_tokens(self, orcid: str, digests) -> int | None:
        """Revoke these tokens of one researcher; how many were live."""
        count = 0
        with self._guard:
            index = self._data.get(token_index_key(orcid))
            for digest in digests:
                if self._data.pop(token_key(digest), None) is not None:
                    count += 1
                self._data.pop(token_used_key(digest), None)
                if index is not None:
                    index[0].discard(digest)
        return count

    def take_tokens_of(self, orcid: str) -> int | None:
        """Revoke every token of one researcher; how many there were."""
        with self._guard:
            found = self._data.pop(token_index_key(orcid), None)
            count = 0
            for digest in found[0] if found is not None else ():
                if self._data.pop(token_key(digest), None) is not None:
                    count += 1
                self._data.pop(token_used_key(digest), None)
        return count

    def touch_token(self, digest: str, when: float, ttl: float) -> None:
        self._set(token_used_key(digest), str(when), ttl)

    # -- sign-in states: single-use --------------------------------------------------------

    def put_state(self, key: str, value: str, ttl: float) -> bool:
        self._set(state_key(key), value, ttl)
        return True

    def take_state(self, key: str) -> str | None:
        """The state's data, removed in the same step: a second read finds nothing."""
        with self._guard:
            found = self._data.pop(state_key(key), None)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def peek_state(self, key: str) -> str | None:
        """The state's data, left in place."""
        with self._guard:
            found = self._data.get(state_key(key))
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def delete_state(self, key: str):
        self._delete(state_key(key))

    def hit(self, key: str, window: float) -> int:
        """Count an event in a fixed window (rate limiting); returns the count so far."""
        full = f"{PREFIX}rl:{key}"
        with self._guard:
            found = self._data.get(full)
            if found is None or found[1] <= self._clock():
                self._data[full] = (1, self._clock() + window)
                return 1
            count = found[0] + 1
            self._data[full] = (count, found[1])
            return count

    def lock(self, name: str, timeout: float):
        with self._guard:
            return _LocalLock(self._locks.setdefault(name, threading.Lock()))

    def ping(self) -> bool:
        return True

    def unready(self) -> str | None:
        return None


def _researcher_of(record: str) -> str:
    """The iD a session record names, which its keys are laid out by."""
    orcid = session_orcid(record)
    if orcid is None:
        raise ValueError("a session record must name its researcher (session_record())")
    return orcid


def _is_decision_key(key: str) -> bool:
    # gk:{<iD>}:d:<version>:<dataset>
    return key.startswith(PREFIX + "{") and key.partition("}:")[2].startswith("d:")


class _LocalLock:
    def __init__(self, lock: threading.Lock):
        self._lock = lock

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def release(self):
        try:
            self._lock.release()
        except RuntimeError:
            pass


class RedisStore:
    """The shared store: one Redis round trip per lookup, MemoryStore while Redis is down.

    After a failure, no request asks Redis again (a circuit breaker): one background
    thread per process pings it every ``retry_after`` seconds, and the first answer
    closes the breaker. So a hung Redis costs the requests in flight when it hung one
    socket timeout each, and nothing after that.
    """

    def __init__(
        self,
        client: redis.Redis,
        warn_interval: float = 30.0,
        retry_after: float = 1.0,
        fast_client: redis.Redis | None = None,
        wait_replicas: int = 0,
    ):
        # Any redis-py client: a Redis, Sentinel's master_for, or a (lazily made)
        # RedisCluster. Other modules (the decision log, write tokens) use it for their
        # own single-key commands.
        self.redis = client
        # /auth's one round trip (``lookup``) waits less for Redis than the rest does.
        self.fast = fast_client if fast_client is not None else client
        self._cluster = isinstance(self.fast, LazyCluster)
        self.fallback = MemoryStore(max_entries=10_000)
        self._warn_interval, self._retry_after = warn_interval, retry_after
        self._last_warning = 0.0
        self._down_until = 0.0  # monotonic; infinity while the prober waits for Redis
        self._fallback_used = False
        self._probe_lock = threading.Lock()  # guards _prober and the breaker's closing
        self._prober: threading.Thread | None = None
        self._seen: dict[str, float] = {}  # session id -> when Redis last had it
        self._ended: set[str] = set()  # sessions ended here that Redis may still hold
        # A new session reaches this many replicas before sign-in completes (WAIT), so
        # that a primary killed just after is not a sign-out (docs/redis.md).
        self.wait_replicas = wait_replicas
        self._last_wait_warning = 0.0

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """A store on any REDIS_URL form (app/redis_connection.py)."""
        target = parse_redis_url(url)
        # Short timeouts and one immediate retry (for a pooled connection Redis closed,
        # or a primary that Sentinel has since replaced): redis-py's default backs off
        # for seconds, while a reverse proxy waits on us.
        client = connect(
            target, socket_timeout=0.5, connect_timeout=0.5, retry=Retry(NoBackoff(), 1)
        )
        # NOTE: the hot path retries a closed connection but never a timeout, and waits
        # 200 ms: a Redis that hangs (SIGSTOP, a stalled disk) holds the checks in flight
        # that long, once, before the breaker sends everyone to memory (a loopback
        # round trip takes 0.1 ms; a busy Redis a few).
        fast = connect(
            target,
            socket_timeout=0.2,
            connect_timeout=0.2,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        return cls(client, fast_client=fast, wait_replicas=target.wait_replicas)

    def _guarded(self, call, fallback, refused=None):
        """``call()`` against Redis, or ``fallback()`` while it is down or when it fails.

        A command Redis answered by refusing it (out of memory, too few replicas for a
        write, a slot on the move) gives ``refused()`` (else ``fallback()``) for that
        call alone: Redis is up, and every other session still counts. A write refused
        is skipped, not kept in memory, which no read looks at while Redis answers.
        """
        if time.monotonic() < self._down_until:
            self._fallback_used = True
            return fallback()
        try:
            result = call()
        except REDIS_ERRORS as exc:
            if not _refused_only(exc):
                self._fault(exc)
                return fallback()
            self._refused(exc)
            return refused() if refused is not None else fallback()
        # NOTE: only with the breaker closed: a call that began before an outage and
        # ended inside it must not clear the mark, or decisions kept here during the
        # outage would outlive it.
        if self._fallback_used and time.monotonic() >= self._down_until:
            # Redis is back: decisions kept here meanwhile may since have been revoked
            # there, and would be served again by the next outage.
            self._fallback_used = False
            self.fallback.forget_all_decisions()
        return result

    def _warn(self, message: str, exc: Exception):
        """Log a warning about Redis at most once per ``_warn_interval``."""
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval:
            self._last_warning = now
            logger.warning(message, exc)

    def _refused(self, exc: Exception):
        self._warn("Redis refused a command (it is up; that call only falls back): %s", exc)

    def _fault(self, exc: Exception):
        self._down_until = math.inf
        self._fallback_used = True
        # Said for the service and the command line alike: no word of deciding.
        self._warn("Redis unavailable, using this process's memory meanwhile: %s", exc)
        with self._probe_lock:
            # is_alive(): a prober of the master's does not survive the fork into a worker.
            if self._prober is None or not self._prober.is_alive():
                # A weak reference: a prober must not keep a store nobody uses alive.
                self._prober = threading.Thread(
                    target=_probe, args=(weakref.ref(self),), name="redis-probe", daemon=True
                )
                self._prober.start()

    # -- sessions: fail closed -----------------------------------------------------------

    def _saw(self, sid: str, session):
        if session is None or sid in self._ended:
            self._seen.pop(sid, None)
            return
        if len(self._seen) >= 100_000:
            self._seen.clear()
        self._seen[sid] = time.monotonic()

    def _remembered(self, sid: str):
        """While Redis is down: UNAVAILABLE for a session seen lately and not ended, else None."""
        seen = self._seen.get(sid)
        if sid in self._ended or seen is None or time.monotonic() - seen > SESSION_GRACE:
            return None
        return UNAVAILABLE

    def get_session(self, sid: str, orcid: str):
        """The session record, if ``sid`` is a live session of ``orcid`` (the cookie's iD)."""

        def call():
            session = self.redis.get(session_key(orcid, sid))
            self._saw(sid, session)
            return None if sid in self._ended else session

        return self._guarded(call, lambda: self._remembered(sid))

    def put_session(self, sid: str, value: str, ttl: float) -> bool:
        """Store a new session; False when Redis did not take it (then there is none).

        :raises ValueError: for a record that names no researcher.
        """
        orcid = _researcher_of(value)
        index = session_index_key(orcid)

        def call():
            with self.redis.pipeline(transaction=True) as pipe:  # the session and its index
                pipe.set(session_key(orcid, sid), value, ex=int(ttl))
                # Each sign-in renews the index in full, so it outlives every session in
                # it; ended sessions' ids linger until then, and cost a DEL each.
                pipe.sadd(index, sid)
                pipe.expire(index, int(ttl))
                pipe.execute()
            self._replicated(orcid)
            self._saw(sid, value)
            return True

        return self._guarded(call, lambda: False)

    def _replicated(self, orcid: str) -> bool:
        """Wait (up to WAIT_TIMEOUT) until ``wait_replicas`` replicas have our last writes;
        whether they did (True when none is asked for).

        Sessions begun and ended must outlive a failover: a session lost signs a
        researcher out, and a sign-out lost would let an ended session count again. So
        an ending (sign-out, revocation) that falls short is not confirmed: its caller
        says so and may try again, as when Redis does not answer. A beginning that falls
        short stands, with a warning: losing it only signs someone out.
        NOTE: WAIT counts the replicas that have the writes of *its own connection*,
        and a pooled write may have gone out on another; so a marker is written on
        WAIT's connection, in the researcher's slot. Replication keeps the primary's
        order, so a replica that has the marker has every write made before it.
        """
        if not self.wait_replicas:
            return True
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{researcher_prefix(orcid)}sync", "1", px=1000)
            pipe.execute_command("WAIT", self.wait_replicas, WAIT_TIMEOUT)
            reached = pipe.execute()[-1]
        if reached >= self.wait_replicas:
            return True
        now = time.monotonic()
        if now - self._last_wait_warning >= self._warn_interval:
            self._last_wait_warning = now
            logger.warning(
                "a session or token change reached %d of %d replicas within %d ms: a "
                "failover before they catch up may undo it",
                reached,
                self.wait_replicas,
                WAIT_TIMEOUT,
            )
        return False

    def delete_session(self, sid: str, orcid: str) -> bool:
        """End a session; False when Redis could not confirm it (it may live on there)."""
        self._ended.add(sid)  # in this process at least, it is over now
        self._seen.pop(sid, None)

        def call():
            self.redis.delete(session_key(orcid, sid))
            if not self._replicated(orcid):
                return False  # ended on the primary only: this process keeps it ended
            self._ended.discard(sid)
            return True

        return self._guarded(call, lambda: False)

    def take_sessions_of(self, orcid: str) -> list[str] | None:
        """End every session of one researcher; their records (for the tokens), or None
        when Redis could not confirm it (then perhaps none ended).

        :raises NotReplicated: they ended on the primary, no replica confirmed it;
            ``taken`` holds the records.
        """
        index = session_index_key(orcid)
        taken: list[tuple[str, str]] = []

        def transaction(pipe):
            # WATCH the index: a sign-in that adds to it meanwhile makes this run again.
            sids = sorted(pipe.smembers(index))
            keys = [session_key(orcid, sid) for sid in sids]
            # execute_command: a cluster pipeline refuses mget() (it cannot know the keys
            # share a slot); these do.
            records = pipe.execute_command("MGET", *keys) if keys else []
            pipe.multi()
            pipe.delete(index, *keys)
            taken[:] = [(sid, r) for sid, r in zip(sids, records, strict=True) if r is not None]

        def call():
            self.redis.transaction(transaction, index)  # one slot: the iD's
            for sid, _ in taken:
                self._seen.pop(sid, None)  # no grace for them if Redis goes down next
                self._ended.add(sid)  # and none here until a replica has the ending
            records = [record for _, record in taken]
            if not self._replicated(orcid):
                # Gone from the primary: a second try finds nothing to take, so the
                # records go to the caller now (for the tokens they carry).
                raise NotReplicated(
                    "the sessions ended on the Redis primary, but no replica confirmed it "
                    "in time: a failover now could bring them back; try again",
                    taken=records,
                )
            for sid, _ in taken:
                self._ended.discard(sid)
            return records

        return self._guarded(call, lambda: None)

    # -- personal access tokens: fail closed, as sessions do ------------------------------

    def put_token(self, digest: str, orcid: str, record: str, ttl: float) -> bool:
        """Keep a new token's record; False when Redis did not take it (then it opens nothing).

        The index first: a record is never live without its owner's index naming it, so
        "revoke all" and "sign out everywhere" always find it.
        """
        millis = max(1, int(ttl * 1000))
        index = token_index_key(orcid)

        def call():
            with self.redis.pipeline(transaction=True) as pipe:  # the researcher's slot
                pipe.sadd(index, digest)
                pipe.pexpire(index, millis, nx=True)
                pipe.pexpire(index, millis, gt=True)
                pipe.execute()
            self.redis.set(token_key(digest), record, px=millis)
            return True

        return self._guarded(call, lambda: False)

    def get_token(self, digest: str):
        """The token's record; None when there is none; UNAVAILABLE while Redis is down
        and this process saw the record there within ``SESSION_GRACE``."""
        seen = _seen_key(digest)

        def call():
            record = self.fast.get(token_key(digest))
            self._saw(seen, record)
            return None if seen in self._ended else record

        return self._guarded(call, lambda: self._remembered(seen))

    def token_lookup(self, digest: str, version: str, orcid: str, dataset: str):
        """(token record, decision) in one round trip, as ``lookup`` is for a session."""
        seen = _seen_key(digest)

        def call():
            keys = token_key(digest), decision_key(version, orcid, dataset)
            if self._cluster:
                # Two slots (the digest's and the researcher's): a pipeline goes to each
                # node once, in parallel.
                with self.fast.pipeline(transaction=False) as pipe:
                    record, decision = pipe.get(keys[0]).get(keys[1]).execute()
            else:
                record, decision = self.fast.mget(*keys)
            self._saw(seen, record)
            return (None if seen in self._ended else record), decision

        return self._guarded(
            call,
            lambda: (self._remembered(seen), self.fallback.get_decision(version, orcid, dataset)),
        )

    def tokens_of(self, orcid: str) -> list[tuple[str, str, str | None]] | None:
        """(digest, record, last used) of each live token of one researcher; None while
        Redis is down."""

        def call():
            digests = sorted(self.redis.smembers(token_index_key(orcid)))
            if not digests:
                return []
            with self.redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.get(token_key(digest)).get(token_used_key(digest))
                values = pipe.execute()
            records, used = values[0::2], values[1::2]
            return [
                (digest, record, last)
                for digest, record, last in zip(digests, records, used, strict=True)
                if record is not None
            ]

        return self._guarded(call, lambda: None)

    def delete_tokens(self, orcid: str, digests) -> int | None:
        """Revoke these tokens of one researcher; how many were live, or None when Redis
        could not confirm it."""
        digests = list(digests)
        for digest in digests:
            self._ended.add(_seen_key(digest))  # in this process at least, it is over now

        def call():
            if not digests:
                # Nothing left to take (a retry after a shortfall): confirm what was.
                return 0 if self._replicated(orcid) else None
            with self.redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    # execute_command: a cluster pipeline's delete() takes one key; these
                    # two share the digest's slot.
                    pipe.execute_command("DEL", token_key(digest), token_used_key(digest))
                deleted = pipe.execute()
            self.redis.srem(token_index_key(orcid), *digests)
            if not self._replicated(orcid):
                return None  # revoked on the primary only: this process keeps them ended
            for digest in digests:
                self._ended.discard(_seen_key(digest))
            return sum(1 for count in deleted if count)

        return self._guarded(call, lambda: None)

    def take_tokens_of(self, orcid: str) -> int | None:
        """Revoke every token of one researcher; how many, or None when Redis could not
        confirm it (then perhaps none was revoked).

        NOTE: records first, then the index: a failure half-way leaves a live token still
        named by its index, so a second try finds it.
        """
        digests = self._guarded(
            lambda: sorted(self.redis.smembers(token_index_key(orcid))), lambda: None
        )
        if digests is None:
            return None
        return self.delete_tokens(orcid, digests)

    def touch_token(self, digest: str, when: float, ttl: float) -> None:
        """Note when the token was last used; skipped while Redis is down."""
        self._guarded(
            lambda: self.redis.set(token_used_key(digest), str(when), px=max(1, int(ttl * 1000))),
            _nothing,
        )

    def session_token_of(self, orcid: str) -> str | None:
        """The ORCID token of one of the researcher's live sessions (one slot, one round
        trip after the index); None when none has one or Redis is down."""

        def call():
            sids = sorted(self.redis.smembers(session_index_key(orcid)))
            if not sids:
                return None
            keys = [session_key(orcid, sid) for sid in sids]
            for record in self.redis.execute_command("MGET", *keys):
                if (token := session_token(record)) is not None:
                    return token
            return None

        return self._guarded(call, lambda: None)

    # -- sign-in states: single-use, and only in Redis ------------------------------------

    def put_state(self, key: str, value: str, ttl: float) -> bool:
        """False when Redis did not take it: then no sign-in can start."""

        def call():
            self.redis.set(state_key(key), value, ex=max(1, int(ttl)))
            return True

        return self._guarded(call, lambda: False)

    def take_state(self, key: str):
        """The state's data, deleted in the same command (GETDEL), so two callbacks racing
        with one state cannot both read it; None if there is none, UNAVAILABLE while Redis
        is down."""
        return self._guarded(lambda: self.redis.getdel(state_key(key)), lambda: UNAVAILABLE)

    def peek_state(self, key: str):
        """The state's data, left in place; UNAVAILABLE while Redis is down."""
        return self._guarded(lambda: self.redis.get(state_key(key)), lambda: UNAVAILABLE)

    def delete_state(self, key: str):
        self._guarded(lambda: self.redis.delete(state_key(key)), _nothing)

    # -- decisions ------------------------------------------------------------------------

    def lookup(self, sid, version, orcid, dataset):
        def call():
            # One slot (the iD's hash tag), so one node answers even on a Cluster.
            keys = session_key(orcid, sid), decision_key(version, orcid, dataset)
            if self._cluster:
                # NOTE: two GETs in one pipeline rather than MGET: while the slot
                # migrates, one key moved and one not yet make MGET answer TRYAGAIN
                # (redis-py retries for about 0.4 s, then fails) where a GET follows
                # ASK. Same slot, same node: still one round trip.
                with self.fast.pipeline(transaction=False) as pipe:
                    session, decision = pipe.get(keys[0]).get(keys[1]).execute()
            else:
                session, decision = self.fast.mget(*keys)
            self._saw(sid, session)
            return (None if sid in self._ended else session), decision

        return self._guarded(
            call,
            lambda: (self._remembered(sid), self.fallback.get_decision(version, orcid, dataset)),
        )

    def get_decision(self, version, orcid, dataset):
        return self._guarded(
            lambda: self.redis.get(decision_key(version, orcid, dataset)),
            lambda: self.fallback.get_decision(version, orcid, dataset),
        )

    def generation(self, orcid: str) -> str:
        """The researcher's count of forgettings, read before a decision's ORCID read."""
        return self._guarded(
            lambda: self.redis.get(generation_key(orcid)) or "0",
            lambda: "fallback:" + self.fallback.generation(orcid),
        )

    def put_decision(
        self, version, orcid, dataset, value: str, ttl: float, generation: str | None = None
    ):
        """Keep a decision, unless the researcher's decisions were forgotten since
        ``generation`` was read (a read begun before a steward's revocation, or a
        withdrawal, may be out of date): one script, in the iD's slot."""
        key, millis = decision_key(version, orcid, dataset), max(1, int(ttl * 1000))
        index = decision_index_key(orcid)
        fallback = generation.removeprefix("fallback:") if generation else generation

        def call():
            if generation is not None and generation.startswith("fallback:"):
                return  # read while Redis was down: Redis's count may have moved since
            keys = (key, index, generation_key(orcid))
            size = self.redis.eval(_PUT_DECISION, 3, *keys, value, millis, generation or "")
            if size > INDEX_PRUNE_AT:
                self._prune(index)

        self._guarded(
            call,
            lambda: self.fallback.put_decision(
                version, orcid, dataset, value, ttl, generation=fallback
            ),
            refused=_nothing,
        )

    def _prune(self, index: str):
        """Drop the keys of expired decisions from a researcher's index."""
        keys = sorted(self.redis.smembers(index))
        if not keys:
            return
        values = self.redis.execute_command("MGET", *keys)
        gone = [k for k, v in zip(keys, values, strict=True) if v is None]
        if gone:
            self.redis.srem(index, *gone)

    def delete_decision(self, version, orcid, dataset):
        self.fallback.delete_decision(version, orcid, dataset)
        self._guarded(lambda: self.redis.delete(decision_key(version, orcid, dataset)), _nothing)

    def forget_orcid(self, orcid: str) -> int:
        """Delete every cached decision about one researcher, in their slot; how many.

        The index names them (no SCAN of every node); WATCH makes a decision stored
        meanwhile run this again, so none slips in between reading and deleting.

        :raises redis.RedisError: an operator's command should hear that Redis is down.
        """
        self.fallback.forget_orcid(orcid)
        index = decision_index_key(orcid)
        deleted: list[int] = []

        def transaction(pipe):
            keys = sorted(pipe.smembers(index))
            pipe.multi()
            pipe.delete(index)
            if keys:
                pipe.delete(*keys)
            # A decision whose ORCID read began before this is not stored after it. A day
            # outlives any read; the count is one small key per researcher forgotten.
            pipe.incr(generation_key(orcid))
            pipe.expire(generation_key(orcid), GENERATION_TTL)
            deleted[:] = [len(keys)]

        try:
            replies = self.redis.transaction(transaction, index)
            replicated = self._replicated(orcid)
        except redis.exceptions.RedisClusterException as exc:
            raise redis.ConnectionError(str(exc)) from None
        if not replicated:
            raise NotReplicated(
                "the decisions were dropped on the Redis primary, but no replica confirmed "
                "it in time: a failover now could bring them back; run it again"
            )
        return replies[1] if deleted[0] else 0

    def forget_decisions(self, orcid: str) -> bool:
        """``forget_orcid`` for the web edge: False when Redis could not confirm it."""

        def call():
            try:
                self.forget_orcid(orcid)
            except NotReplicated:
                return False
            return True

        return self._guarded(call, lambda: False)

    def hit(self, key: str, window: float) -> int:
        full = f"{PREFIX}rl:{key}"

        def call():
            with self.redis.pipeline() as pipe:
                count, _ = pipe.incr(full).expire(full, int(window), nx=True).execute()
            return int(count)

        return self._guarded(call, lambda: self.fallback.hit(key, window))

    def lock(self, name: str, timeout: float):
        return _RedisLock(self, name, timeout)

    @property
    def answering(self) -> bool:
        """False while the breaker is open: a caller with a fallback should not wait."""
        return time.monotonic() >= self._down_until

    def ping(self) -> bool:
        """Asks Redis itself, breaker or not: readiness wants the truth."""
        try:
            return bool(self.redis.ping())
        except REDIS_ERRORS:
            return False

    def unready(self) -> str | None:
        """Why Redis cannot keep what we need now, or None. Asks Redis itself, breaker or
        not. A read-only replica where the primary should be, or a full Redis under
        noeviction, answers PING and refuses every sign-in: a write must be taken."""
        if not self.ping():
            return "Redis does not answer"
        try:
            self.redis.set(READY_KEY, "1", px=READY_PROBE_MS)
        except redis.ResponseError as exc:
            return f"Redis refuses writes: {printable(str(exc))[:120]}"
        except REDIS_ERRORS:
            return "Redis does not answer"
        return None


def _nothing():
    return None


def _refused_only(exc: Exception) -> bool:
    """Whether Redis answered the command and refused it, rather than not answering:
    OOM, NOREPLICAS, TRYAGAIN and the like. A read-only replica where a primary should
    be, and a cluster or primary that says it is down, are down."""
    down = (
        redis.exceptions.ReadOnlyError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.MasterDownError,
    )
    return isinstance(exc, redis.ResponseError) and not isinstance(exc, down)


def _probe(store_ref):
    """Ping Redis every ``retry_after`` seconds until it answers, then close the breaker."""
    while True:
        store = store_ref()
        if store is None:
            return
        pause = store._retry_after
        del store
        time.sleep(pause)
        store = store_ref()
        if store is None:
            return
        with store._probe_lock:
            if time.monotonic() >= store._down_until:  # closed meanwhile
                store._prober = None
                return
        try:
            store.fast.ping()
        except REDIS_ERRORS:
            del store
            continue
        with store._probe_lock:
            store._down_until = 0.0
            store._prober = None
        logger.info("Redis answers again")
        return


class _RedisLock:
    """A lock shared by every worker; while Redis is down, a lock in this process.

    Held in Redis as a lease of ``LOCK_LEASE`` seconds that a thread renews while the
    holder works, for at most ``timeout`` seconds in all. A holder killed mid-read stops
    renewing, so the next caller gets the lock within a lease instead of after
    ``timeout``.
    """

    def __init__(self, store: RedisStore, name: str, timeout: float, lease: float = LOCK_LEASE):
        self._store, self._timeout, self._lease = store, timeout, min(lease, timeout)
        self._name = f"{PREFIX}lock:{name}"
        self._lock = None  # made in acquire(): a Cluster's client may not be reachable yet
        self._local = None
        self._released = threading.Event()

    def acquire(self) -> bool:
        def local():
            self._local = self._store.fallback.lock(self._name, self._timeout)
            return self._local.acquire()

        def shared():
            # thread_local=False: the lease thread renews with the holder's token.
            self._lock = self._store.redis.lock(
                self._name, timeout=self._lease, blocking=False, thread_local=False
            )
            if not self._lock.acquire(token=uuid.uuid4().hex):
                return False
            threading.Thread(target=self._renew, name="lock-lease", daemon=True).start()
            return True

        return self._store._guarded(shared, local)

    def _renew(self):
        """Renew the lease until released, or until ``timeout`` since it was taken."""
        ends = time.monotonic() + self._timeout
        while not self._released.wait(self._lease / 3):
            if time.monotonic() + self._lease / 3 >= ends:
                return  # the holder overran its budget: let the lease lapse
            try:
                self._lock.reacquire()
            except (*REDIS_ERRORS, redis.exceptions.LockError):
                return  # Redis gone, or the lease lapsed and another took it

    def release(self):
        self._released.set()
        if self._local is not None:
            self._local.release()
            return
        if self._lock is None:
            return
        try:
            self._lock.release()
        except (*REDIS_ERRORS, redis.exceptions.LockError):
            pass  # expired or Redis gone: the lease lapses by itself
