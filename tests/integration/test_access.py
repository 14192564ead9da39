"""AccessChecker with real stores: caching, single-flight, fail-closed, policy changes."""

import datetime as dt
import threading
import time

import pytest

from app.access import AccessChecker
from app.cache import MemoryStore, RedisStore
from app.errors import OrcidUnavailable, RecordLocked
from app.policy import PolicyFile
from app.saved_record import SavedRecord
from tests import orcid_json
from tests.conftest import POLICY, RESEARCHER, qualified_items


class CountingRecord(SavedRecord):
    """A saved record that counts reads, can be slowed down, or can fail."""

    def __init__(self, items, delay=0.0, error=None):
        super().__init__(
            {"orcid": RESEARCHER, "qualifications": orcid_json.summaries(RESEARCHER, items)}
        )
        self.reads, self.delay, self.error = 0, delay, error
        self._lock = threading.Lock()

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        with self._lock:
            self.reads += 1
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return super().read_qualifications(orcid, wanted, token)


@pytest.fixture(params=["memory", "redis"])
def store(request, redis_url):
    return MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)


@pytest.fixture
def policy_file(write_policy):
    return PolicyFile(write_policy(POLICY), check_interval=0)


class TestAccessChecker:
    def test_a_decision_is_cached_and_served_without_reading_orcid(self, policy_file, store):
        record = CountingRecord(qualified_items())
        checker = AccessChecker(policy_file, record, store)
        assert checker.check(RESEARCHER, "sail").allowed
        assert checker.check(RESEARCHER, "sail").allowed
        assert record.reads == 1

    @pytest.mark.parametrize(
        "setting, before, after",
        [("check_record_status", False, True), ("max_items", 50, 10), ("api_url", "a", "b")],
    )
    def test_a_change_in_how_orcid_is_read_is_a_miss(
        self, policy_file, store, setting, before, after
    ):
        record = CountingRecord(qualified_items())
        setattr(record, setting, before)
        AccessChecker(policy_file, record, store).check(RESEARCHER, "sail")
        setattr(record, setting, after)
        AccessChecker(policy_file, record, store).check(RESEARCHER, "sail")
        assert record.reads == 2

    def test_fresh_bypasses_the_cache(self, policy_file, store):
        record = CountingRecord(qualified_items())
        checker = AccessChecker(policy_file, record, store)
        checker.check(RESEARCHER, "sail")
        checker.check(RESEARCHER, "sail", fresh=True)
        assert record.reads == 2

    def test_thirty_concurrent_misses_share_one_read(self, policy_file, store):
        record = CountingRecord(qualified_items(), delay=0.3)
        checker = AccessChecker(policy_file, record, store)
        barrier = threading.Barrier(30)
        results = []

        def ask():
            barrier.wait()
            results.append(checker.check(RESEARCHER, "sail").allowed)

        threads = [threading.Thread(target=ask) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [True] * 30
        assert record.reads == 1

    def test_an_unreadable_record_is_a_refusal_with_its_reason(self, policy_file, store):
        checker = AccessChecker(policy_file, CountingRecord([], error=RecordLocked()), store)
        decision = checker.check(RESEARCHER, "sail")
        assert not decision.allowed and decision.error.reason == "record_locked"

    def test_refusals_are_cached_briefly_and_orcid_failures_more_briefly(self, policy_file, store):
        now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
        checker = AccessChecker(
            policy_file, CountingRecord([]), store, refusal_ttl=60, clock=lambda: now
        )
        assert checker.ttl(checker.check(RESEARCHER, "sail")) == 60
        down = AccessChecker(
            policy_file, CountingRecord([], error=OrcidUnavailable()), store, clock=lambda: now
        )
        assert down.ttl(down.check(RESEARCHER, "open")) == 10

    def test_allows_are_cached_until_the_dataset_ttl(self, policy_file, store):
        now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
        checker = AccessChecker(
            policy_file, CountingRecord(qualified_items()), store, clock=lambda: now
        )
        assert checker.ttl(checker.check(RESEARCHER, "sail")) == 900  # sail's cache_ttl

    def test_a_policy_change_is_a_new_version_and_a_miss(self, policy_file, store):
        record = CountingRecord(qualified_items())
        checker = AccessChecker(policy_file, record, store)
        checker.check(RESEARCHER, "sail")
        policy_file.path.write_text(POLICY.replace("cache_ttl: 900", "cache_ttl: 901"))
        assert policy_file.refresh() is False  # the reload runs off the request path
        assert policy_file.wait(timeout=10) is True
        checker.check(RESEARCHER, "sail")
        assert record.reads == 2

    def test_a_broken_policy_edit_keeps_the_policy_in_force(self, policy_file, store):
        version = policy_file.current.version
        policy_file.path.write_text("version: 1\ndatasets: {x: {}}\n")
        policy_file.refresh()
        assert policy_file.wait(timeout=10) is False
        assert policy_file.current.version == version
        assert "require" in str(policy_file.last_error.problems)
