"""The stores against a real redis-server: keys, expiry, epoch, locks, outages."""

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
    def test_lookup_returns_epoch_session_and_decision_together(self, any_store):
        any_store.put_session("s1", '{"orcid": "x"}', 60)
        any_store.put_decision("v1", "0000-0002-1825-0097", "d", '{"a": 1}', 60)
        _epoch, session, decision = any_store.lookup("s1", "v1", "0000-0002-1825-0097", "d")
        assert (session, decision) == ('{"orcid": "x"}', '{"a": 1}')
        assert any_store.lookup("s1", "v2", "0000-0002-1825-0097", "d")[2] is None

    def test_entries_expire(self, any_store):
        any_store.put_decision("v1", "o", "d", "x", 0.2)
        assert any_store.get_decision("v1", "o", "d") == "x"
        time.sleep(0.35)
        assert any_store.get_decision("v1", "o", "d") is None

    def test_deleting_a_session_bumps_the_epoch(self, any_store):
        any_store.put_session("s1", "{}", 60)
        before = any_store.lookup("s1", "v", "o", "d")[0]
        any_store.delete_session("s1")
        epoch, session, _ = any_store.lookup("s1", "v", "o", "d")
        assert session is None and epoch == before + 1

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
        epoch, session, decision = store.lookup("s1", "v", "o", "d")
        assert epoch is None and session is UNAVAILABLE and decision is None
        store.put_decision("v", "o", "d", "kept", 60)  # no exception
        assert store.get_decision("v", "o", "d") == "kept"  # from the fallback
        assert store.get_session("s1") is UNAVAILABLE
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
    def test_revoke_drops_a_researchers_decisions_and_bumps_the_epoch(self, redis_url):
        from click.testing import CliRunner

        from app.cli import main

        store = RedisStore.from_url(redis_url)
        store.put_decision("v1", "0000-0002-1825-0097", "a", "x", 60)
        epoch = store.lookup("s", "v1", "o", "a")[0]
        result = CliRunner().invoke(
            main,
            ["decisions", "revoke", "--orcid", "https://orcid.org/0000-0002-1825-0097"],
            env={"REDIS_URL": redis_url},
        )
        assert result.exit_code == 0, result.output
        assert "revoked 1 cached decision for 0000-0002-1825-0097" in result.output
        assert store.get_decision("v1", "0000-0002-1825-0097", "a") is None
        assert store.lookup("s", "v1", "o", "a")[0] == epoch + 1

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
            assert store.lookup("s", "v", "o", "d")[1] is UNAVAILABLE
            first = len(accepted)
            for _ in range(10):
                assert store.lookup("s", "v", "o", "d")[1] is UNAVAILABLE
                store.put_decision("v", "o", "d", "x", 60)
            assert len(accepted) == first  # no new connection while the breaker is open
            assert store.get_decision("v", "o", "d") == "x"  # kept in the fallback
        finally:
            listener.close()
            for connection in accepted:
                connection.close()
