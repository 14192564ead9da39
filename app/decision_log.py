"""The decision log: every decision made from an ORCID read, with what it was made from.

Each entry keeps the decision and the qualifications it was judged on, in the parsed form
(``Qualification.to_dict``), so ``app.impact`` can replay it against another policy
without calling ORCID. With Redis the log is one stream, ``gk:decisions``: ``XADD`` is
atomic and Redis gives every entry its own ID, so any number of workers and instances
append safely, and each append trims entries older than the retention (``MINID``).
Without Redis it is a bounded list in this process (one worker, the demo, tests).

A Redis fault never fails a decision: the entry is dropped, counted in
``gatekeeper_decision_log_failures_total`` and warned about at most once per interval;
the decision's JSON line on stderr is written all the same.

Reading (for ``gatekeeper decisions`` and the steward console)::

    log.entries(since=..., orcid=..., dataset=..., outcome=..., limit=...)  # newest first
    log.latest(since=..., orcid=..., dataset=..., readable=False)  # one per iD and dataset
    log.scan(since=...)  # newest first, one at a time, items and all (impact previews)

``entries`` and ``latest`` give the decisions without the items they were made from
(``items=True`` to have them): a reader that shows decisions parses no items. Each
reads at most ``MAX_SCAN`` matching entries unless told ``cap=None`` (the command line);
an entry's summaries are dropped from the end past ``MAX_ENTRY_BYTES``.

Reads raise ``DecisionLogUnavailable`` when Redis cannot answer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

import redis
from prometheus_client import Counter
from redis.backoff import default_backoff

from app.decision import Decision
from app.errors import GatekeeperError
from app.qualifications import Qualification, UnreadableItem, item_from_dict

logger = logging.getLogger(__name__)

STREAM_KEY = "gk:decisions"
OUTCOMES = ("allow", "deny", "error")
DEFAULT_RETENTION_DAYS = 90  # the default of DECISION_LOG_RETENTION in app/settings.py
# Items that were no candidate are kept as the summary showed them, so that a candidate
# policy naming another title can still be replayed; a record stuffed with thousands of
# items must not make every one of its entries megabytes long.
MAX_SUMMARIES = 200
# An entry's JSON, at most: past it, summaries are dropped from the end (a researcher
# whose record holds hundreds of long look-alike items decides how often they are logged).
MAX_ENTRY_BYTES = 64 * 1024
MAX_SCAN = 10_000  # matching entries one read of ``entries`` or ``latest`` looks at
PAGE = 500  # entries per XREVRANGE while reading

# Defined here rather than in app/metrics.py so the log's failure count lives beside the
# only code that increments it; prometheus_client registers it all the same.
FAILURES = Counter(
    "gatekeeper_decision_log_failures_total",
    "Decision log entries dropped because Redis did not take them.",
)


class DecisionLogUnavailable(GatekeeperError):
    reason = "decision_log_unavailable"
    message = "The decision log could not be read: Redis did not answer."


def decision_outcome(decision: Decision) -> str:
    """allow, deny, or error: a record we could not read is not a researcher's refusal."""
    if decision.error is not None:
        return "error"
    return "allow" if decision.allowed else "deny"


def deciding_reasons(decision: Decision) -> list[str]:
    """The reasons behind the answer: those of the requirements that were not met.

    A met requirement's other candidates failed too, but they decided nothing. An unmet
    requirement with no candidate at all is ``missing``.
    """
    if decision.error is not None:
        return [decision.error.reason]
    reasons = set()
    for result in decision.requirements:
        if result.met:
            continue
        found = {f.reason for c in result.candidates for f in c.failures}
        reasons |= found or {"missing"}
    return sorted(reasons)


def _instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One logged decision and what it was made from."""

    decision: Decision
    # The items read in full, exactly the list decide() judged.
    qualifications: tuple[Qualification | UnreadableItem, ...] = ()
    # The record's other items, as the summary showed them (no candidate for the policy
    # then in force, so never read in full); at most MAX_SUMMARIES of them.
    summaries: tuple[Qualification | UnreadableItem, ...] = ()
    own_client_id: str | None = None  # whose items counted as self-issued
    instance: str = field(default_factory=_instance)  # host:pid of the worker that decided
    # Unique per decision: a reader drops a second copy (an append retried after a lost
    # reply), so no decision is counted twice.
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    id: str | None = None  # the stream ID, once logged: milliseconds-sequence
    # Read back without its items (``items=False``): the decision only, not replayable.
    partial: bool = False

    @property
    def orcid(self) -> str:
        return self.decision.orcid

    @property
    def dataset(self) -> str:
        return self.decision.dataset

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def outcome(self) -> str:
        return decision_outcome(self.decision)

    @property
    def reasons(self) -> list[str]:
        return deciding_reasons(self.decision)

    @property
    def policy_version(self) -> str:
        return self.decision.policy_version

    @property
    def decided_at(self) -> dt.datetime:
        return self.decision.decided_at

    @property
    def record_was_read(self) -> bool:
        """Whether the decision was made from the record (not an ``error``)."""
        return self.decision.error is None

    @property
    def is_replayable(self) -> bool:
        """Whether it holds what it was made from: the record was read, and the items
        were read back with it (an ``error`` entry holds no qualifications)."""
        return self.record_was_read and not self.partial

    def bounded(self) -> tuple[LogEntry, str]:
        """This entry with as many summaries as fit ``MAX_ENTRY_BYTES``, and its JSON."""
        entry = self
        while True:
            # ASCII: a string Python holds but UTF-8 cannot encode never fails an append.
            text = json.dumps(entry.to_dict(), separators=(",", ":"))
            if len(text) <= MAX_ENTRY_BYTES or not entry.summaries:
                return entry, text
            entry = replace(entry, summaries=entry.summaries[: len(entry.summaries) // 2])

    def to_dict(self) -> dict:
        return {
            "entry_id": self.entry_id,
            "decision": self.decision.to_dict(),
            "qualifications": [q.to_dict() for q in self.qualifications],
            "summaries": [q.to_dict() for q in self.summaries],
            "own_client_id": self.own_client_id,
            "instance": self.instance,
        }

    @classmethod
    def from_dict(cls, data: dict, id: str | None = None) -> LogEntry:
        """:raises ValueError: (or KeyError, TypeError) for data no ``to_dict`` wrote."""
        return cls(
            decision=Decision.from_dict(data["decision"]),
            qualifications=tuple(item_from_dict(q) for q in data.get("qualifications", ())),
            summaries=tuple(item_from_dict(q) for q in data.get("summaries", ())),
            own_client_id=data.get("own_client_id"),
            instance=data.get("instance") or "",
            entry_id=data["entry_id"],
            id=id,
        )

    def summary(self) -> dict:
        """Who, what, when, under which policy and why: one line of ``decisions list --json``."""
        error = self.decision.error
        return {
            "orcid": self.orcid,
            "dataset": self.dataset,
            "allowed": self.allowed,
            "outcome": self.outcome,
            "reasons": self.reasons,
            "policy_version": self.policy_version,
            "decided_at": self.decided_at.isoformat(),
            "valid_until": _iso(self.decision.valid_until),
            "error": error.message if error is not None else None,
            "id": self.id,
        }

    def expiring(self) -> list[tuple[dt.date, str, int | None, str]]:
        """For an allow: (last day it counts, requirement, put-code, qualification's name)
        for each requirement met by an item with an end."""
        if not self.allowed:
            return []
        found = []
        for result in self.decision.requirements:
            if not result.met or result.valid_until is None:
                continue
            title = next(
                (c.title for c in result.candidates if c.put_code == result.put_code and c.ok),
                None,
            )
            found.append(
                (result.valid_until, result.label, result.put_code, title or result.qualification)
            )
        return found


WRITE_KINDS = ("issued", "renewed", "withdrawn")


@dataclass(frozen=True, slots=True)
class WriteEntry:
    """One write this service made to a researcher's ORCID record (issuing), logged beside
    the decisions it changes: who, which qualification, what happened, and on whose word."""

    kind: str  # one of WRITE_KINDS
    orcid: str
    qualification: str  # the policy's key for it
    put_code: int | None
    by: str  # "researcher" (accepted terms on our page) or "steward <iD or name>"
    at: dt.datetime
    visibility: str | None = None  # as ORCID gave it
    valid_until: dt.date | None = None  # the end date written
    terms_version: str | None = None
    instance: str = field(default_factory=_instance)
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    id: str | None = None  # the stream ID, once logged

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "orcid": self.orcid,
            "qualification": self.qualification,
            "put_code": self.put_code,
            "by": self.by,
            "at": self.at.isoformat(),
            "visibility": self.visibility,
            "valid_until": _iso(self.valid_until),
            "terms_version": self.terms_version,
            "instance": self.instance,
            "entry_id": self.entry_id,
        }

    @classmethod
    def from_dict(cls, data: dict, id: str | None = None) -> WriteEntry:
        """:raises ValueError: (or KeyError, TypeError) for data no ``to_dict`` wrote."""
        until = data.get("valid_until")
        return cls(
            kind=data["kind"],
            orcid=data["orcid"],
            qualification=data["qualification"],
            put_code=data.get("put_code"),
            by=data["by"],
            at=dt.datetime.fromisoformat(data["at"]),
            visibility=data.get("visibility"),
            valid_until=dt.date.fromisoformat(until) if until else None,
            terms_version=data.get("terms_version"),
            instance=data.get("instance") or "",
            entry_id=data["entry_id"],
            id=id,
        )

    def summary(self) -> dict:
        return {**self.to_dict(), "id": self.id}


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _matches(fields: dict, orcid, dataset, outcome) -> bool:
    return (
        (orcid is None or fields.get("orcid") == orcid)
        and (dataset is None or fields.get("dataset") == dataset)
        and (outcome is None or fields.get("outcome") == outcome)
    )


def _fields(entry: LogEntry) -> dict:
    """A stream entry: the filterable parts apart, so reads skip others without parsing,
    and the decision apart from its items, so a reader of decisions parses no items."""
    _, text = entry.bounded()
    return {
        "orcid": entry.orcid,
        "dataset": entry.dataset,
        "outcome": entry.outcome,
        "entry_id": entry.entry_id,
        "decision": json.dumps(entry.decision.to_dict(), separators=(",", ":")),
        "entry": text,
    }


def _decision_only(fields: dict, stream_id: str) -> LogEntry:
    """The entry's decision, parsed alone (an entry logged before "decision" had its own
    field: from the whole entry, items left unparsed)."""
    if "decision" in fields and "entry_id" in fields:
        data, entry_id = json.loads(fields["decision"]), fields["entry_id"]
    else:
        whole = json.loads(fields["entry"])
        data, entry_id = whole["decision"], whole["entry_id"]
    return LogEntry(
        decision=Decision.from_dict(data), entry_id=entry_id, id=stream_id, partial=True
    )


def _write_fields(entry: WriteEntry) -> dict:
    # "write" marks it, so a reader of decisions passes over it without parsing.
    return {
        "write": entry.kind,
        "orcid": entry.orcid,
        "entry": json.dumps(entry.to_dict(), separators=(",", ":")),
    }


def _millis(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def latest_of(entries, readable: bool = False) -> list[LogEntry]:
    """The newest entry of each researcher and dataset, from entries newest first.

    With ``readable``, the newest one made from a read record (not ``error``).
    """
    seen, result = set(), []
    for entry in entries:
        key = (entry.orcid, entry.dataset)
        if key in seen or (readable and not entry.record_was_read):
            continue
        seen.add(key)
        result.append(entry)
    return result


class _Reading:
    """The read API both logs share, on top of ``_scan`` (newest first, filtered)."""

    def entries(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        orcid: str | None = None,
        dataset: str | None = None,
        outcome: str | None = None,
        limit: int | None = None,
        items: bool = False,
        cap: int | None = MAX_SCAN,
    ) -> list[LogEntry]:
        """Logged decisions, newest first, optionally filtered; at most ``limit``, and
        never more than ``cap`` (None: no cap, for the command line, which no proxy
        waits on). With ``items``, the items each was made from too.

        :raises DecisionLogUnavailable: when Redis cannot answer.
        """
        bounds = [n for n in (limit, cap) if n is not None]
        scanned = self._scan(since, until, orcid, dataset, outcome, items)
        return list(islice(scanned, min(bounds)) if bounds else scanned)

    def latest(
        self,
        *,
        since: dt.datetime | None = None,
        orcid: str | None = None,
        dataset: str | None = None,
        readable: bool = False,
        cap: int | None = MAX_SCAN,
    ) -> list[LogEntry]:
        """The newest logged decision of each researcher and dataset, newest first, from
        the newest ``cap`` entries (None: all; decisions only, no items).

        With ``readable``, the newest one made from a record that could be read.

        :raises DecisionLogUnavailable: when Redis cannot answer.
        """
        scanned = self._scan(since, None, orcid, dataset, None, False)
        return latest_of(islice(scanned, cap) if cap is not None else scanned, readable)

    def scan(self, *, since: dt.datetime | None = None) -> Iterator[LogEntry]:
        """Every logged decision since ``since``, newest first, with its items, one at a
        time (a preview keeps one per researcher and dataset, not the window).

        :raises DecisionLogUnavailable: when Redis cannot answer.
        """
        return self._scan(since, None, None, None, None, True)

    def writes(
        self, *, orcid: str | None = None, since: dt.datetime | None = None, limit: int = 1000
    ) -> list[WriteEntry]:
        """Logged writes to ORCID records (issued, renewed, withdrawn), newest first.

        :raises DecisionLogUnavailable: when Redis cannot answer.
        """
        result = []
        for entry in self._scan_writes(since, orcid):
            result.append(entry)
            if len(result) >= limit:
                break
        return result

    def _scan(self, since, until, orcid, dataset, outcome, items) -> Iterator[LogEntry]:
        raise NotImplementedError

    def _scan_writes(self, since, orcid) -> Iterator[WriteEntry]:
        raise NotImplementedError


class MemoryDecisionLog(_Reading):
    """The log in this process's memory: the newest ``max_entries`` within the retention."""

    def __init__(
        self,
        max_entries: int = 10_000,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock=time.time,
    ):
        self._entries: deque[tuple[str, dict, LogEntry]] = deque(maxlen=max_entries)
        self._guard = threading.Lock()
        self.retention_days = retention_days
        self._retention = retention_days * 86400.0
        self._clock = clock
        self._last = (0, 0)
        self._writes: deque[WriteEntry] = deque(maxlen=max_entries)

    def _next_id(self) -> str:
        now = int(self._clock() * 1000)
        ms, seq = self._last
        self._last = (ms, seq + 1) if now <= ms else (now, 0)
        return f"{self._last[0]}-{self._last[1]}"

    def append_write(self, entry: WriteEntry) -> bool:
        with self._guard:
            self._writes.append(replace(entry, id=self._next_id()))
        return True

    def _scan_writes(self, since, orcid) -> Iterator[WriteEntry]:
        low = _millis(since) if since is not None else 0
        cutoff = int(self._clock() * 1000) - int(self._retention * 1000)
        with self._guard:
            snapshot = list(self._writes)
        for entry in reversed(snapshot):
            if _id_millis(entry.id) < max(low, cutoff):
                break
            if orcid is None or entry.orcid == orcid:
                yield entry

    def append(self, entry: LogEntry) -> bool:
        with self._guard:
            now = int(self._clock() * 1000)
            stream_id = self._next_id()
            cutoff = now - int(self._retention * 1000)
            while self._entries and _id_millis(self._entries[0][0]) < cutoff:
                self._entries.popleft()
            fields = {"orcid": entry.orcid, "dataset": entry.dataset, "outcome": entry.outcome}
            self._entries.append((stream_id, fields, replace(entry.bounded()[0], id=stream_id)))
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def _scan(self, since, until, orcid, dataset, outcome, items) -> Iterator[LogEntry]:
        # Parsed already: ``items`` costs nothing here, so every entry comes whole.
        low = _millis(since) if since is not None else None
        high = _millis(until) if until is not None else None
        cutoff = int(self._clock() * 1000) - int(self._retention * 1000)
        with self._guard:
            snapshot = list(self._entries)
        for stream_id, fields, entry in reversed(snapshot):
            ms = _id_millis(stream_id)
            if ms < cutoff or (low is not None and ms < low):
                break
            if high is not None and ms > high:
                continue
            if _matches(fields, orcid, dataset, outcome):
                yield entry


def _id_millis(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


class RedisDecisionLog(_Reading):
    """The log as the Redis stream ``gk:decisions``, shared by every worker and instance.

    After a failed append Redis is left alone for ``retry_after`` seconds, so a hung
    Redis costs a decision one socket timeout now and then, not one each.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        key: str = STREAM_KEY,
        clock=time.time,
        warn_interval: float = 30.0,
        retry_after: float = 2.0,
    ):
        self.redis, self.key = client, key
        self.retention_days = retention_days
        self._retention = retention_days * 86400.0
        self._clock = clock
        self._warn_interval, self._retry_after = warn_interval, retry_after
        self._last_warning = float("-inf")
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisDecisionLog:
        """For commands: a longer socket timeout than the service's, since a person waits.

        Any REDIS_URL form (app/redis_connection.py): the stream is one key, so any
        topology serves it.
        """
        from redis.retry import Retry

        from app.redis_connection import connect

        # Three retries, backing off as redis-py does by default: a person can wait.
        retry = Retry(default_backoff(), 3)
        client = connect(url, socket_timeout=5, connect_timeout=2, retry=retry)
        return cls(client, **kwargs)

    def append(self, entry: LogEntry) -> bool:
        """Add one entry and trim those past the retention; False when Redis did not take it."""
        return self._add(_fields(entry))

    def append_write(self, entry: WriteEntry) -> bool:
        """Log one write to a record; False when Redis did not take it (the caller says so:
        a write is rarer than a decision, and its trace matters more)."""
        return self._add(_write_fields(entry))

    def _add(self, fields: dict) -> bool:
        if time.monotonic() < self._down_until:
            self._dropped(None)
            return False
        cutoff = int((self._clock() - self._retention) * 1000)
        try:
            # Exact MINID: each append removes the few entries that aged out since the
            # last one, so the stream never holds more than the retention.
            self.redis.xadd(self.key, fields, minid=max(cutoff, 0), approximate=False)
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + self._retry_after
            self._dropped(exc)
            return False
        return True

    def _dropped(self, exc: Exception | None):
        FAILURES.inc()
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval:
            self._last_warning = now
            logger.warning(
                "Redis unavailable, decision log entries are dropped (stderr lines remain): %s",
                exc or "Redis was failing moments ago",
            )

    def __len__(self) -> int:
        try:
            return int(self.redis.xlen(self.key))
        except redis.RedisError as exc:
            raise DecisionLogUnavailable() from exc

    def _stream(self, since, until) -> Iterator[tuple[str, dict]]:
        """The stream's entries between ``since`` and ``until``, newest first, a page at
        a time."""
        low = str(_millis(since)) if since is not None else "-"
        high = str(_millis(until)) if until is not None else "+"
        while True:
            try:
                page = self.redis.xrevrange(self.key, max=high, min=low, count=PAGE)
            except redis.RedisError as exc:
                raise DecisionLogUnavailable(
                    f"The decision log could not be read: Redis did not answer ({exc})."
                ) from exc
            yield from page
            if len(page) < PAGE:
                return
            high = "(" + page[-1][0]  # exclusive: continue below the last one read

    def _scan(self, since, until, orcid, dataset, outcome, items) -> Iterator[LogEntry]:
        seen: set[str] = set()
        for stream_id, fields in self._stream(since, until):
            if "write" in fields or not _matches(fields, orcid, dataset, outcome):
                continue
            try:
                if items:
                    entry = LogEntry.from_dict(json.loads(fields["entry"]), id=stream_id)
                else:
                    entry = _decision_only(fields, stream_id)
            except (ValueError, KeyError, TypeError):
                logger.warning("skipped an unreadable decision log entry %s", stream_id)
                continue
            if entry.entry_id in seen:
                continue
            seen.add(entry.entry_id)
            yield entry

    def _scan_writes(self, since, orcid) -> Iterator[WriteEntry]:
        for stream_id, fields in self._stream(since, None):
            if "write" not in fields or (orcid is not None and fields.get("orcid") != orcid):
                continue
            try:
                yield WriteEntry.from_dict(json.loads(fields["entry"]), id=stream_id)
            except (ValueError, KeyError, TypeError):
                logger.warning("skipped an unreadable write log entry %s", stream_id)


def decision_log_for(store, retention_days: int = DEFAULT_RETENTION_DAYS):
    """The log that goes with a store: its Redis stream, or a log in this process."""
    from app.cache import RedisStore

    if isinstance(store, RedisStore):
        return RedisDecisionLog(store.redis, retention_days=retention_days)
    return MemoryDecisionLog(retention_days=retention_days)
