"""Write tokens: encrypted at rest, rotated keys still decrypt, tampering reads as none."""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet

from app.cache import MemoryStore
from app.write_tokens import WriteToken, WriteTokens, write_token_key

ORCID = "0000-0002-1825-0097"


def token(scope=("/activities/update", "/read-limited"), lifetime=3600) -> WriteToken:
    now = time.time()
    return WriteToken("secret-access-token", tuple(scope), now + lifetime, now)


class FakeRedis:
    """What WriteTokens asks of Redis (SET with EX, GET, DEL), and nothing else."""

    def __init__(self):
        self.data, self.ttls = {}, {}

    def set(self, key, value, ex):
        self.data[key], self.ttls[key] = value, ex

    def get(self, key):
        return self.data.get(key)

    def delete(self, key):
        return 1 if self.data.pop(key, None) is not None else 0


class RedisLike:
    def __init__(self):
        self.redis = FakeRedis()


def test_a_stored_token_reads_back_and_is_not_stored_in_the_clear():
    store = RedisLike()
    tokens = WriteTokens(store, (Fernet.generate_key().decode(),))
    tokens.put(ORCID, token())
    raw = store.redis.data[write_token_key(ORCID)]
    assert "secret-access-token" not in raw
    assert "activities" not in raw
    assert tokens.get(ORCID).access_token == "secret-access-token"
    assert tokens.get(ORCID).can_write


def test_the_key_is_hash_tagged_by_the_researcher():
    assert write_token_key(ORCID) == "gk:{0000-0002-1825-0097}:wt"


def test_it_expires_in_redis_when_orcid_s_token_does():
    store = RedisLike()
    tokens = WriteTokens(store, (Fernet.generate_key().decode(),))
    tokens.put(ORCID, token(lifetime=600))
    assert 590 <= store.redis.ttls[write_token_key(ORCID)] <= 600


def test_an_old_key_still_decrypts_after_rotation():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    store = RedisLike()
    WriteTokens(store, (old,)).put(ORCID, token())
    rotated = WriteTokens(store, (new, old))
    assert rotated.get(ORCID).access_token == "secret-access-token"
    rotated.put(ORCID, token())  # re-sealed with the new key
    assert WriteTokens(store, (new,)).get(ORCID) is not None


def test_a_tampered_or_foreign_token_reads_as_none_and_is_kept():
    store = RedisLike()
    WriteTokens(store, (Fernet.generate_key().decode(),)).put(ORCID, token())
    other = WriteTokens(store, (Fernet.generate_key().decode(),))
    assert other.get(ORCID) is None
    assert write_token_key(ORCID) in store.redis.data  # a wrong key wipes nobody's
    sealed = store.redis.data[write_token_key(ORCID)]
    store.redis.data[write_token_key(ORCID)] = sealed[:-4] + "AAAA"
    assert WriteTokens(store, (Fernet.generate_key().decode(),)).get(ORCID) is None


def test_without_a_key_nothing_is_kept():
    tokens = WriteTokens(MemoryStore(), ())
    assert not tokens.enabled
    with pytest.raises(RuntimeError):
        tokens.put(ORCID, token())
    assert tokens.get(ORCID) is None


def test_a_token_without_the_write_scope_cannot_write():
    assert not token(scope=("/read-limited",)).can_write
    assert not token(lifetime=-1).can_write


def test_in_memory_without_redis_and_deleted_on_request():
    tokens = WriteTokens(MemoryStore(), (Fernet.generate_key().decode(),))
    tokens.put(ORCID, token())
    assert tokens.get(ORCID) is not None
    assert tokens.delete(ORCID) is True
    assert tokens.get(ORCID) is None
    assert tokens.delete(ORCID) is False
