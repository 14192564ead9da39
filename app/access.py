"""AccessChecker: cache -> single-flight -> ORCID read -> decide -> store -> log.

Concurrent misses for the same researcher and dataset share one ORCID read, across
gunicorn workers when the store is Redis: one caller takes the lock and evaluates; the
others wait for its decision to appear in the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time

import redis

from app import metrics
from app.decision import Decision, decide, refuse_unreadable
from app.decision_log import (
    MAX_SUMMARIES,
    LogEntry,
    deciding_reasons,
    decision_log_for,
    decision_outcome,
)
from app.errors import OrcidError, OrcidUnavailable, TokenInvalid
from app.orcid_client import caller_deadline
from app.policy import PolicyFile

logger = logging.getLogger(__name__)
decision_log = logging.getLogger("app.decisions")

# A refusal because ORCID itself failed is kept only briefly: long enough to spare a
# struggling ORCID a stampede, short enough that the researcher is not locked out.
ERROR_TTL = 10.0
WAIT_STEP = 0.02


class AccessChecker:
    def __init__(
        self,
        policy_file: PolicyFile,
        reader,
        store,
        *,
        write_tokens=None,  # WriteTokens: a researcher's /read-limited token, if kept
        own_client_id: str | None = None,
        refusal_ttl: float = 60,
        max_ttl: float = 3600,
        wait_timeout: float = 9.0,  # a little over the ORCID client's total_timeout
        clock=lambda: dt.datetime.now(dt.UTC),
        decision_log=None,  # default: the store's (a Redis stream, or this process's)
    ):
        self.policy_file, self.reader, self.store = policy_file, reader, store
        self.write_tokens = write_tokens
        self.decision_log = decision_log if decision_log is not None else decision_log_for(store)
        self.own_client_id = own_client_id
        self.refusal_ttl, self.max_ttl = refusal_ttl, max_ttl
        self.wait_timeout = wait_timeout
        self.clock = clock
        # Which items count as self-issued, which ORCID was read and how (the record
        # status check, the item cap) are part of a decision too: changing any of them
        # must not serve a cached one.
        source = "|".join(
            str(getattr(reader, name, ""))
            for name in ("api_url", "check_record_status", "max_items")
        )
        source = f"{own_client_id}|{source}"
        self._namespace = hashlib.sha256(source.encode()).hexdigest()[:8]

    @property
    def policy(self):
        return self.policy_file.current

    def cache_version(self, policy) -> str:
        """The version part of cache keys: the policy's, and this service's ORCID setup."""
        return f"{policy.version}.{self._namespace}"

    def cached(self, orcid: str, dataset: str) -> Decision | None:
        raw = self.store.get_decision(self.cache_version(self.policy), orcid, dataset)
        return decision_from_json(raw)

    def check(
        self, orcid: str, dataset: str, token: str | None = None, fresh: bool = False
    ) -> Decision:
        """The decision for one researcher and dataset, from the cache when it holds.

        ``fresh`` drops the cached decision first (the researcher's "check again").

        :raises UnknownDataset: when the policy has no such dataset.
        """
        policy = self.policy
        target = policy.dataset(dataset)
        key = (self.cache_version(policy), orcid, target.key)
        if fresh:
            self.store.delete_decision(*key)
        elif (hit := decision_from_json(self.store.get_decision(*key))) is not None:
            return hit
        lock = self.store.lock(":".join(key), timeout=self.wait_timeout + 5)
        deadline = time.monotonic() + self.wait_timeout
        if (answer_by := caller_deadline()) is not None:
            # /auth's own budget (app/admission.py): a waiter must not answer past it.
            deadline = min(deadline, answer_by)
        while not lock.acquire():
            # Another worker is reading this record: wait for its decision.
            time.sleep(WAIT_STEP)
            if (hit := decision_from_json(self.store.get_decision(*key))) is not None:
                return hit
            if time.monotonic() > deadline:
                # The other check overran its own ORCID budget: refuse now rather than
                # start a second read and keep the proxy waiting past its timeout.
                logger.warning("gave up waiting for a concurrent check of %s", target.key)
                return refuse_unreadable(
                    policy, target, orcid=orcid, error=OrcidUnavailable(), now=self.clock()
                )
        try:
            if not fresh and (hit := decision_from_json(self.store.get_decision(*key))):
                return hit
            # NOTE: read before ORCID is: a steward's revocation or a withdrawal during
            # the read forgets the researcher's decisions, and this one, from a record
            # that may predate it, must not be stored after it (it is still answered).
            generation = self.store.generation(orcid)
            decision = self._evaluate(policy, target, orcid, token)
            self.store.put_decision(
                *key, decision_to_json(decision), self.ttl(decision), generation=generation
            )
            return decision
        finally:
            lock.release()

    def _evaluate(self, policy, target, orcid, token) -> Decision:
        now = self.clock()
        items, others = [], {}

        def wanted(item) -> bool:
            if policy.is_candidate(target, item):
                return True
            # Logged as the summary showed it, so that a candidate policy that would
            # have read it can be previewed without ORCID.
            if len(others) < MAX_SUMMARIES:
                others.setdefault(item.put_code if item.put_code is not None else id(item), item)
            return False

        try:
            items = self._read(orcid, wanted, token)
            decision = decide(
                policy, target, items, orcid=orcid, now=now, own_client_id=self.own_client_id
            )
        except OrcidError as exc:
            items, others = [], {}
            decision = refuse_unreadable(policy, target, orcid=orcid, error=exc, now=now)
        metrics.DECISIONS.labels(decision_outcome(decision)).inc()
        log_decision(decision)
        self.decision_log.append(
            LogEntry(decision, tuple(items), tuple(others.values()), self.own_client_id)
        )
        return decision

    def _read(self, orcid, wanted, session_token):
        """The record as the researcher's broadest token shows it.

        A researcher who let us add qualifications gave us ``/read-limited`` with it: an
        item we added counts even when ORCID made it private (only its source and the
        researcher see those). When ORCID refuses that token, the session's is used.
        """
        kept = self._kept_token(orcid)
        if kept is not None:
            try:
                return self.reader.read_qualifications(orcid, wanted, token=kept)
            except TokenInvalid:
                logger.info("ORCID refused a kept write token; reading with the session's")
                self._forget_kept_token(orcid)
        return self.reader.read_qualifications(orcid, wanted, token=session_token)

    def _kept_token(self, orcid: str) -> str | None:
        if self.write_tokens is None or not self.write_tokens.enabled:
            return None
        try:
            token = self.write_tokens.get(orcid)
        except redis.RedisError:
            return None  # read as the session may; a decision never waits on this
        return token.access_token if token is not None else None

    def _forget_kept_token(self, orcid: str) -> None:
        try:
            self.write_tokens.delete(orcid)
        except redis.RedisError:
            logger.warning("could not forget a refused write token: Redis did not answer")

    def cache_until(self, decision: Decision) -> dt.datetime:
        """When a cached copy must go: allows when they stop holding, refusals soon.

        Counted from when the decision was made, so every cache layer agrees.
        """
        if decision.error is not None and decision.error.reason == OrcidUnavailable.reason:
            limit = ERROR_TTL
        elif decision.allowed:
            limit = self.max_ttl
        else:
            limit = self.refusal_ttl
        until = decision.decided_at + dt.timedelta(seconds=limit)
        if decision.valid_until is not None:
            until = min(until, decision.valid_until)
        return until

    def ttl(self, decision: Decision) -> float:
        """Seconds from now that a decision may stay cached (at least one)."""
        return max((self.cache_until(decision) - self.clock()).total_seconds(), 1.0)


def decision_to_json(decision: Decision) -> str:
    return json.dumps(decision.to_dict(), separators=(",", ":"))


def decision_from_json(raw) -> Decision | None:
    if not raw or not isinstance(raw, str):
        return None
    try:
        return Decision.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        logger.warning("dropped an unreadable cached decision")
        return None


def log_decision(decision: Decision):
    """One line per decision made: who, what, outcome, why; never a token."""
    decision_log.info(
        "decision",
        extra={
            "orcid": decision.orcid,
            "dataset": decision.dataset,
            "outcome": decision_outcome(decision),
            "reasons": deciding_reasons(decision),
            "policy_version": decision.policy_version,
        },
    )
