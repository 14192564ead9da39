"""The stores' sessions by researcher and single-use sign-in states, against a real Redis."""

from __future__ import annotations

import pytest

from app.cache import (
    UNAVAILABLE,
    MemoryStore,
    RedisStore,
    session_belongs_to,
    session_expires,
    session_index_key,
    session_record,
)
from tests.integration.conftest import free_port

JOSIAH, OTHER = "0000-0002-1825-0097", "0000-0001-5109-3700"


@pytest.fixture(params=["memory", "redis"])
def any_store(request, redis_url):
    return MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)


@pytest.fixture
def unreachable():
    """A RedisStore whose Redis refuses every connection."""
    return RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")


class TestSessionsByResearcher:
    def test_take_sessions_of_ends_every_session_of_that_id_only(self, any_store):
        for sid, orcid, token in (("a", JOSIAH, "t1"), ("b", JOSIAH, "t2"), ("c", OTHER, "t3")):
            assert any_store.put_session(sid, session_record(orcid, token), 60)
        taken = any_store.take_sessions_of(JOSIAH)
        assert sorted(taken) == sorted([session_record(JOSIAH, "t1"), session_record(JOSIAH, "t2")])
        assert any_store.get_session("a", JOSIAH) is None
        assert any_store.get_session("b", JOSIAH) is None
        assert any_store.get_session("c", OTHER) == session_record(OTHER, "t3")
        assert any_store.take_sessions_of(JOSIAH) == []

    def test_a_session_ended_before_is_not_returned(self, any_store):
        any_store.put_session("a", session_record(JOSIAH, "t1"), 60)
        any_store.put_session("b", session_record(JOSIAH, "t2"), 60)
        any_store.delete_session("a", JOSIAH)
        assert any_store.take_sessions_of(JOSIAH) == [session_record(JOSIAH, "t2")]

    def test_the_redis_index_lives_as_long_as_the_newest_session(self, redis_url, redis_server):
        store = RedisStore.from_url(redis_url)
        store.put_session("a", session_record(JOSIAH, None), 100)
        store.put_session("b", session_record(JOSIAH, None), 5000)
        assert redis_server.client.smembers(session_index_key(JOSIAH)) == {"a", "b"}
        assert 4990 < redis_server.client.ttl(session_index_key(JOSIAH)) <= 5000

    def test_with_redis_down_nothing_is_confirmed(self, unreachable):
        assert unreachable.take_sessions_of(JOSIAH) is None
        assert unreachable.forget_decisions(JOSIAH) is False


class TestSignInStates:
    def test_a_state_can_be_taken_once(self, any_store):
        assert any_store.put_state("_state_orcid_s1", '{"data": {}}', 60) is True
        assert any_store.take_state("_state_orcid_s1") == '{"data": {}}'
        assert any_store.take_state("_state_orcid_s1") is None

    def test_a_peeked_state_stays(self, any_store):
        any_store.put_state("_state_orcid_s1", '{"data": {}}', 60)
        assert any_store.peek_state("_state_orcid_s1") == '{"data": {}}'
        assert any_store.take_state("_state_orcid_s1") == '{"data": {}}'
        assert any_store.peek_state("_state_orcid_s1") is None

    def test_a_deleted_state_is_gone(self, any_store):
        any_store.put_state("_state_orcid_s1", "{}", 60)
        any_store.delete_state("_state_orcid_s1")
        assert any_store.take_state("_state_orcid_s1") is None

    def test_with_redis_down_no_state_is_kept_or_read(self, unreachable):
        assert unreachable.put_state("_state_orcid_s1", "{}", 60) is False
        assert unreachable.take_state("_state_orcid_s1") is UNAVAILABLE
        assert unreachable.peek_state("_state_orcid_s1") is UNAVAILABLE


class TestSessionBelongsTo:
    @pytest.mark.parametrize(
        "stored, expected",
        [
            (session_record(JOSIAH, "t"), True),
            (session_record(OTHER, "t"), False),
            (None, False),
            ("not json", False),
            ('{"token": "t"}', False),
            (UNAVAILABLE, True),  # Redis down, session seen lately: the grace applies
        ],
        ids=["same-id", "other-id", "no-session", "unreadable", "no-id", "unavailable"],
    )
    def test_the_cookies_id_must_be_the_sessions(self, stored, expected):
        assert session_belongs_to(stored, JOSIAH) is expected


def test_a_session_record_says_when_it_ends_and_nothing_else_is_taken_for_it(any_store):
    assert any_store.put_session("s", session_record(JOSIAH, "t", 1_800_000_000.5), 60)
    assert session_expires(any_store.get_session("s", JOSIAH)) == 1_800_000_000.5
    # Older records, a store that is down, and anything not a finite number: unknown.
    hostile = ['{"expires": true}', '{"expires": "1800000000"}', '{"expires": NaN}', "[1]", "{"]
    hostile.append('{"expires": 1' + "0" * 400 + "}")  # an int no float holds
    for stored in [session_record(JOSIAH, "t"), UNAVAILABLE, None, *hostile]:
        assert session_expires(stored) is None, stored
