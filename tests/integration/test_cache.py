"""The stores against a real redis-server: keys, expiry, sessions, locks, outages."""

import threading
import time

import pytest

from app.cache import UNAVAILABLE, MemoryStore, RedisStore


@pytest.fixture
def store(redis_url):
    return RedisStore.from_url(redis_url)


@pytest.fixture(params=["memory", "redis"])
def any_store(request, redis_url):
    return MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)


class TestStores:
    def test_lookup_returns_session_and_decision_together(self, any_store):
        any_store.put_session("s1", '{"orcid": "x"}', 60)
        any_store.put_decision("v1", "0000-0002-1825-0097", "d", '{"a": 1}', 60)
        session, decision = any_store.lookup("s1", "v1", "0000-0002-1825-0097", "d")
        assert (session, decision) == ('{"orcid": "x"}', '{"a": 1}')
        assert any_store.lookup("s1", "v2", "0000-0002-1825-0097", "d")[1] is None

    def test_entries_expire(self, any_store):
        any_store.put_decision("v1", "o", "d", "x", 0.2)
        assert any_store.get_decision("v1", "o", "d") == "x"
        time.sleep(0.35)
        assert any_store.get_decision("v1", "o", "d") is None

    def test_a_deleted_session_is_gone(self, any_store):
        assert any_store.put_session("s1", "{}", 60) is True
        assert any_store.delete_session("s1") is True
        assert any_store.lookup("s1", "v", "o", "d")[0] is None
        assert any_store.get_session("s1") is None

    def test_forget_orcid_drops_only_that_researchers_decisions(self, any_store):
        any_store.put_decision("v1", "0000-0002-1825-0097", "a", "x", 60)
        any_store.put_decision("v2", "0000-0002-1825-0097", "b", "x", 60)
        any_store.put_decision("v1", "0000-0001-5109-3700", "a", "y", 60)
        assert any_store.forget_orcid("0000-0002-1825-0097") == 2
        assert any_store.get_decision("v1", "0000-0001-5109-3700", "a") == "y"
        assert any_store.get_decision("v1", "0000-0002-1825-0097", "a") is None

    def test_a_lock_is_held_by_one_caller_at_a_time(self, any_store):
        first, second = any_store.lock("k", 5), any_store.lock("k", 5)
        assert first.acquire() is True
        assert second.acquire() is False
        first.release()
        assert second.acquire() is True
        second.release()

    def test_rate_counter_counts_within_a_window(self, any_store):
        assert [any_store.hit("r", 60) for _ in range(3)] == [1, 2, 3]


class TestRedisOutage:
    def test_a_stopped_redis_is_a_miss_and_falls_back_to_memory(
        self, redis_server, redis_url, caplog
    ):
        store = RedisStore.from_url(redis_url)
        redis_server.stop()
        session, decision = store.lookup("s1", "v", "o", "d")
        assert session is None and decision is None  # never seen in Redis: no session
        store.put_decision("v", "o", "d", "kept", 60)  # no exception
        assert store.get_decision("v", "o", "d") == "kept"  # from the fallback
        assert store.get_session("s1") is None
        assert store.ping() is False
        lock = store.lock("k", 5)
        assert lock.acquire() is True
        lock.release()
        warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(warnings) == 1  # once per interval, not once per call

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
        store.put_decision("v1", "0000-0002-1825-0097", "a", "x", 60)
        store.put_decision("v1", "0000-0001-5109-3700", "a", "y", 60)
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
        store.put_session("seen", "{}", 60)
        assert store.get_session("seen") == "{}"
        redis_server.stop()
        assert store.get_session("seen") is UNAVAILABLE
        assert store.lookup("seen", "v", "o", "d")[0] is UNAVAILABLE
        assert store.get_session("never-seen") is None

    def test_new_sessions_are_refused_and_logouts_are_not_confirmed(self, redis_server, redis_url):
        store = RedisStore.from_url(redis_url)
        store.put_session("s1", "{}", 60)
        # A hung Redis that keeps its data: every command waits past our timeouts.
        redis_server.client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert store.put_session("s2", "{}", 60) is False
        assert store.delete_session("s1") is False  # not confirmed...
        assert store.get_session("s1") is None  # ...but over in this process at once
        assert redis_server.client.exists("gk:s:s1") == 1  # Redis still holds it
        store._down_until = 0  # let the breaker close now rather than in two seconds
        assert store.get_session("s1") is None
        assert store.delete_session("s1") is True  # a retry succeeds
        assert redis_server.client.exists("gk:s:s1") == 0
