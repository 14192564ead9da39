"""The stores against a real redis-server: keys, expiry, sessions, locks, outages."""

import threading
import time

import pytest
import redis
from redis.crc import key_slot

from app.cache import (
    UNAVAILABLE,
    MemoryStore,
    RedisStore,
    session_key,
    session_record,
    token_index_key,
    token_key,
)

JOSIAH, OTHER = "0000-0002-1825-0097", "0000-0001-5109-3700"


@pytest.fixture
def store(redis_url):
    return RedisStore.from_url(redis_url)


@pytest.fixture(params=["memory", "redis"])
def any_store(request, redis_url):
    return MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)


class TestStores:
    def test_lookup_returns_session_and_decision_together(self, any_store):
        any_store.put_session("s1", session_record(JOSIAH, None), 60)
        any_store.put_decision("v1", JOSIAH, "d", '{"a": 1}', 60)
        session, decision = any_store.lookup("s1", "v1", JOSIAH, "d")
        assert (session, decision) == (session_record(JOSIAH, None), '{"a": 1}')
        assert any_store.lookup("s1", "v2", JOSIAH, "d")[1] is None

    def test_a_session_is_found_only_under_the_id_it_was_started_for(self, any_store):
        any_store.put_session("s1", session_record(JOSIAH, None), 60)
        assert any_store.get_session("s1", OTHER) is None
        assert any_store.lookup("s1", "v", OTHER, "d")[0] is None

    def test_a_session_record_must_name_its_researcher(self, any_store):
        with pytest.raises(ValueError):
            any_store.put_session("s1", "{}", 60)

    def test_entries_expire(self, any_store):
        any_store.put_decision("v1", "o", "d", "x", 0.2)
        assert any_store.get_decision("v1", "o", "d") == "x"
        time.sleep(0.35)
        assert any_store.get_decision("v1", "o", "d") is None

    def test_a_deleted_session_is_gone(self, any_store):
        assert any_store.put_session("s1", session_record(JOSIAH, None), 60) is True
        assert any_store.delete_session("s1", JOSIAH) is True
        assert any_store.lookup("s1", "v", JOSIAH, "d")[0] is None
        assert any_store.get_session("s1", JOSIAH) is None

    def test_forget_orcid_drops_only_that_researchers_decisions(self, any_store):
        any_store.put_decision("v1", JOSIAH, "a", "x", 60)
        any_store.put_decision("v2", JOSIAH, "b", "x", 60)
        any_store.put_decision("v1", OTHER, "a", "y", 60)
        assert any_store.forget_orcid(JOSIAH) == 2
        assert any_store.get_decision("v1", OTHER, "a") == "y"
        assert any_store.get_decision("v1", JOSIAH, "a") is None
        assert any_store.forget_orcid(JOSIAH) == 0

    def test_a_decision_read_before_its_researcher_was_forgotten_is_not_kept(self, any_store):
        # A steward's revocation (or a withdrawal) during an ORCID read: the decision
        # from that read may predate it, and must not be stored after it.
        before = any_store.generation(JOSIAH)
        other_before = any_store.generation(OTHER)
        any_store.forget_orcid(JOSIAH)
        any_store.put_decision("v1", JOSIAH, "d", "stale", 60, generation=before)
        assert any_store.get_decision("v1", JOSIAH, "d") is None
        # Another researcher's reads go on; a read begun after is kept.
        any_store.put_decision("v1", OTHER, "d", "kept", 60, generation=other_before)
        assert any_store.get_decision("v1", OTHER, "d") == "kept"
        any_store.put_decision(
            "v1", JOSIAH, "d", "new", 60, generation=any_store.generation(JOSIAH)
        )
        assert any_store.get_decision("v1", JOSIAH, "d") == "new"

    def test_a_lock_is_held_by_one_caller_at_a_time(self, any_store):
        first, second = any_store.lock("k", 5), any_store.lock("k", 5)
        assert first.acquire() is True
        assert second.acquire() is False
        first.release()
        assert second.acquire() is True
        second.release()

    def test_rate_counter_counts_within_a_window(self, any_store):
        assert [any_store.hit("r", 60) for _ in range(3)] == [1, 2, 3]


class TestTokens:
    def test_a_token_is_kept_listed_looked_up_with_a_decision_and_revoked(self, any_store):
        assert any_store.put_token("d1", JOSIAH, "record-1", 60)
        assert any_store.put_token("d2", JOSIAH, "record-2", 60)
        assert any_store.put_token("d3", OTHER, "record-3", 60)
        any_store.put_decision("v", JOSIAH, "ds", "allow", 60)
        assert any_store.get_token("d1") == "record-1"
        assert any_store.token_lookup("d1", "v", JOSIAH, "ds") == ("record-1", "allow")
        any_store.touch_token("d2", 1234.5, 60)
        assert any_store.tokens_of(JOSIAH) == [
            ("d1", "record-1", None),
            ("d2", "record-2", "1234.5"),
        ]
        assert any_store.delete_tokens(JOSIAH, ["d1", "nope"]) == 1
        assert any_store.get_token("d1") is None
        assert any_store.take_tokens_of(JOSIAH) == 1
        assert any_store.tokens_of(JOSIAH) == []
        assert any_store.get_token("d3") == "record-3"  # another researcher's stays

    def test_a_tokens_record_and_index_expire_with_it(self, store, redis_server):
        assert store.put_token("d1", JOSIAH, "record", 30)
        assert 0 < redis_server.client.pttl(token_key("d1")) <= 30_000
        assert 0 < redis_server.client.pttl(token_index_key(JOSIAH)) <= 30_000
        assert store.put_token("d2", JOSIAH, "record", 90)  # the index lives as long as its longest
        assert redis_server.client.pttl(token_index_key(JOSIAH)) > 30_000

    def test_the_session_token_of_a_live_session(self, any_store):
        assert any_store.session_token_of(JOSIAH) is None
        any_store.put_session("s1", session_record(JOSIAH, None), 60)
        assert any_store.session_token_of(JOSIAH) is None
        any_store.put_session("s2", session_record(JOSIAH, "orcid-token"), 60)
        assert any_store.session_token_of(JOSIAH) == "orcid-token"


class TestRedisRefusesACommand:
    def test_a_full_redis_refuses_writes_and_every_session_still_counts(self, store, redis_server):
        # OOM (noeviction) answers the command: Redis is up. Taken for down before, it
        # signed out everyone this worker served, a second later.
        assert store.put_session("s1", session_record(OTHER, None), 60)
        assert store.get_session("s1", OTHER) is not None
        time.sleep(1.1)  # last seen past SESSION_GRACE ago: only Redis can say it stands
        client = redis_server.client
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        try:
            store.put_decision("v", JOSIAH, "d", "allow", 60)  # refused: skipped, no raise
            assert store.lookup("s1", "v", OTHER, "d")[0] == session_record(OTHER, None)
        finally:
            client.config_set("maxmemory", "0")
        assert store.get_decision("v", JOSIAH, "d") is None  # Redis never had it


class TestRedisOutage:
    def test_a_call_that_ends_inside_an_outage_keeps_its_decisions_marked(self, store):
        # A call that began before the breaker opened, and answered after, cleared the
        # mark: a decision kept in memory during the outage then outlived it.
        def answered_while_another_call_failed():
            store._fault(redis.ConnectionError("another thread's call failed meanwhile"))
            return "answered"

        assert store._guarded(answered_while_another_call_failed, lambda: None) == "answered"
        store.put_decision("v", JOSIAH, "d", "kept in the outage", 60)  # the breaker is open
        assert store.fallback.get_decision("v", JOSIAH, "d") == "kept in the outage"
        store._down_until = 0.0  # the prober closes the breaker
        store.get_decision("v", OTHER, "d")  # the first call Redis answers after it
        assert store.fallback.get_decision("v", JOSIAH, "d") is None

    def test_a_stopped_redis_is_a_miss_and_falls_back_to_memory(
        self, redis_server, redis_url, caplog
    ):
        store = RedisStore.from_url(redis_url)
        redis_server.stop()
        session, decision = store.lookup("s1", "v", "o", "d")
        assert session is None and decision is None  # never seen in Redis: no session
        store.put_decision("v", "o", "d", "kept", 60)  # no exception
        assert store.get_decision("v", "o", "d") == "kept"  # from the fallback
        assert store.get_session("s1", JOSIAH) is None
        assert store.ping() is False
        lock = store.lock("k", 5)
        assert lock.acquire() is True
        lock.release()
        warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(warnings) == 1  # once per interval, not once per call

    def test_tokens_fail_closed_a_second_after_redis_last_confirmed_them(
        self, redis_server, redis_url
    ):
        store = RedisStore.from_url(redis_url)
        assert store.put_token("seen", JOSIAH, "record", 60)
        assert store.put_token("unseen", JOSIAH, "record", 60)
        assert store.get_token("seen") == "record"
        redis_server.stop()
        assert store.get_token("seen") is UNAVAILABLE  # seen within the grace
        assert store.get_token("unseen") is None
        assert store.token_lookup("unseen", "v", JOSIAH, "d") == (None, None)
        assert store.put_token("new", JOSIAH, "record", 60) is False
        assert store.tokens_of(JOSIAH) is None and store.take_tokens_of(JOSIAH) is None
        time.sleep(1.1)
        assert store.get_token("seen") is None

    def test_locks_exclude_each_other_across_clients(self, redis_url):
        a, b = RedisStore.from_url(redis_url), RedisStore.from_url(redis_url)
        held = a.lock("shared", 5)
        assert held.acquire()
        results = []
        thread = threading.Thread(target=lambda: results.append(b.lock("shared", 5).acquire()))
        thread.start()
        thread.join()
        assert results == [False]
        held.release()


class TestRevokeCommand:
    def test_revoke_drops_a_researchers_decisions(self, redis_url):
        from click.testing import CliRunner

        from app.cli import main

        store = RedisStore.from_url(redis_url)
        store.put_decision("v1", JOSIAH, "a", "x", 60)
        store.put_decision("v1", OTHER, "a", "y", 60)
        result = CliRunner().invoke(
            main,
            ["decisions", "revoke", "--orcid", "https://orcid.org/0000-0002-1825-0097"],
            env={"REDIS_URL": redis_url},
        )
        assert result.exit_code == 0, result.output
        assert "revoked 1 cached decision for 0000-0002-1825-0097" in result.output
        assert store.get_decision("v1", "0000-0002-1825-0097", "a") is None
        assert store.get_decision("v1", "0000-0001-5109-3700", "a") == "y"

    def test_revoke_without_redis_is_a_usage_error(self):
        from click.testing import CliRunner

        from app.cli import main

        result = CliRunner().invoke(
            main, ["decisions", "revoke", "--orcid", "0000-0002-1825-0097"], env={"REDIS_URL": ""}
        )
        assert result.exit_code == 2 and "REDIS_URL" in result.stderr


class TestCircuitBreaker:
    def test_a_hung_redis_is_asked_once_then_left_alone(self):
        """A server that accepts connections and never answers: a hung Redis."""
        import socket

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        accepted = []

        def accept():
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                accepted.append(connection)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
        store._retry_after = 30  # keep the breaker open for the whole test
        try:
            assert store.lookup("s", "v", "o", "d") == (None, None)
            first = len(accepted)
            for _ in range(10):
                assert store.lookup("s", "v", "o", "d")[0] is None
                store.put_decision("v", "o", "d", "x", 60)
            assert len(accepted) == first  # no new connection while the breaker is open
            assert store.get_decision("v", "o", "d") == "x"  # kept in the fallback
        finally:
            listener.close()
            for connection in accepted:
                connection.close()


class TestSessionsWhileRedisIsDown:
    """Sessions fail closed: Redis down is no reason to believe a cookie we cannot check."""

    def test_a_session_seen_lately_still_counts(self, redis_server, redis_url):
        store = RedisStore.from_url(redis_url)
        store.put_session("seen", session_record(JOSIAH, None), 60)
        assert store.get_session("seen", JOSIAH) == session_record(JOSIAH, None)
        redis_server.stop()
        assert store.get_session("seen", JOSIAH) is UNAVAILABLE
        assert store.lookup("seen", "v", JOSIAH, "d")[0] is UNAVAILABLE
        assert store.get_session("never-seen", JOSIAH) is None

    def test_new_sessions_are_refused_and_logouts_are_not_confirmed(self, redis_server, redis_url):
        store = RedisStore.from_url(redis_url)
        store.put_session("s1", session_record(JOSIAH, None), 60)
        # A hung Redis that keeps its data: every command waits past our timeouts.
        redis_server.client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert store.put_session("s2", session_record(JOSIAH, None), 60) is False
        assert store.delete_session("s1", JOSIAH) is False  # not confirmed...
        assert store.get_session("s1", JOSIAH) is None  # ...but over in this process at once
        assert redis_server.client.exists(session_key(JOSIAH, "s1")) == 1  # Redis still has it
        store._down_until = 0  # let the breaker close now rather than in two seconds
        assert store.get_session("s1", JOSIAH) is None
        assert store.delete_session("s1", JOSIAH) is True  # a retry succeeds
        assert redis_server.client.exists(session_key(JOSIAH, "s1")) == 0


class TestKeyLayout:
    """Every key about a researcher carries their iD as a hash tag: one cluster slot."""

    def test_session_decision_and_indexes_share_the_ids_slot(self, store, redis_server):
        store.put_session("s1", session_record(JOSIAH, None), 60)
        store.put_decision("v1", JOSIAH, "a", "x", 60)
        keys = sorted(redis_server.client.keys("gk:*"))
        assert keys == [
            f"gk:{{{JOSIAH}}}:d:v1:a",
            f"gk:{{{JOSIAH}}}:di",
            f"gk:{{{JOSIAH}}}:s:s1",
            f"gk:{{{JOSIAH}}}:si",
        ]
        assert len({key_slot(k.encode()) for k in keys}) == 1

    def test_revoking_asks_redis_for_no_scan(self, store, redis_server):
        store.put_decision("v1", JOSIAH, "a", "x", 60)
        before = _calls(redis_server, "scan")
        assert store.forget_orcid(JOSIAH) == 1
        assert _calls(redis_server, "scan") == before

    def test_the_decision_index_lives_as_long_as_its_longest_decision(self, store, redis_server):
        store.put_decision("v1", JOSIAH, "a", "x", 500)
        store.put_decision("v1", JOSIAH, "b", "x", 50)  # shorter: the index keeps 500 s
        assert 490_000 < redis_server.client.pttl(f"gk:{{{JOSIAH}}}:di") <= 500_000
        store.put_decision("v2", JOSIAH, "a", "x", 5000)  # longer: it grows to 5000 s
        assert 4_990_000 < redis_server.client.pttl(f"gk:{{{JOSIAH}}}:di") <= 5_000_000

    def test_the_decision_index_sheds_expired_keys_past_its_bound(self, store, redis_server):
        from app.cache import INDEX_PRUNE_AT

        for n in range(INDEX_PRUNE_AT):
            store.put_decision(f"old{n}", JOSIAH, "a", "x", 0.05)
        time.sleep(0.1)
        store.put_decision("new", JOSIAH, "a", "x", 60)
        assert redis_server.client.smembers(f"gk:{{{JOSIAH}}}:di") == {f"gk:{{{JOSIAH}}}:d:new:a"}


def _calls(redis_server, command: str) -> int:
    stats = redis_server.client.info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)
