"""ORCID tokens that may write to a researcher's record, kept encrypted at rest.

A researcher who lets us add a qualification (``/activities/update``) gives us a token
that outlives the sign-in session: a steward may issue or withdraw later, and renewals
come months after. So it lives apart from the session, one per researcher, under
``gk:{<iD>}:wt`` (hash-tagged by iD, like the rest of that researcher's keys), sealed
with Fernet (authenticated encryption: a token altered in Redis does not decrypt, and a
copy of the store without WRITE_TOKEN_KEY gives nothing usable). ``MultiFernet`` encrypts
with the first key and decrypts with any, so keys rotate without losing tokens.

Redis errors reach the caller: a researcher is told we could not keep the permission,
a steward's command says Redis did not answer; nothing is dropped in silence.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

logger = logging.getLogger(__name__)

WRITE_SCOPE = "/activities/update"


def write_token_key(orcid: str) -> str:
    return f"gk:{{{orcid}}}:wt"


@dataclass(frozen=True, slots=True)
class WriteToken:
    access_token: str = field(repr=False)  # never in a log line or a traceback
    scope: tuple[str, ...]
    expires_at: float  # seconds since the epoch, as ORCID's expires_in gave it
    granted_at: float

    @property
    def can_write(self) -> bool:
        return WRITE_SCOPE in self.scope and self.expires_at > time.time()


class WriteTokens:
    """One encrypted write token per researcher, in Redis or (without it) this process."""

    def __init__(self, store, keys: tuple[str, ...] = ()):
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None
        # RedisStore's client: single-key commands only, so any topology serves.
        self._store, self._redis = store, getattr(store, "redis", None)
        self._memory: dict[str, tuple[bytes, float]] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether a key is set: without one we never keep a token that can write."""
        return self._fernet is not None

    def _client(self):
        """Redis, or None for this process's memory.

        :raises redis.ConnectionError: while the store's breaker is open: nobody waits on
            a Redis already known to be down (a decision reads through here).
        """
        if self._redis is not None and not getattr(self._store, "answering", True):
            raise redis.ConnectionError("Redis is not answering (the store's breaker is open)")
        return self._redis

    def put(self, orcid: str, token: WriteToken) -> None:
        """:raises redis.RedisError: when Redis does not take it."""
        sealed = self._seal(token)
        ttl = max(int(token.expires_at - time.time()), 1)
        if (client := self._client()) is not None:
            client.set(write_token_key(orcid), sealed.decode("ascii"), ex=ttl)
            return
        with self._guard:
            self._memory[orcid] = (sealed, time.time() + ttl)

    def get(self, orcid: str) -> WriteToken | None:
        """The researcher's token, or None (none kept, expired, or not ours to decrypt).

        :raises redis.RedisError: when Redis cannot answer.
        """
        if self._fernet is None:
            return None
        if (client := self._client()) is not None:
            raw = client.get(write_token_key(orcid))
            sealed = raw.encode("ascii") if isinstance(raw, str) else raw
        else:
            with self._guard:
                sealed, until = self._memory.get(orcid, (None, 0.0))
            if until <= time.time():
                sealed = None
        if not sealed:
            return None
        try:
            data = json.loads(self._fernet.decrypt(sealed))
            token = WriteToken(
                data["access_token"], tuple(data["scope"]), data["expires_at"], data["granted_at"]
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            # NOTE: kept, not deleted: a key removed from WRITE_TOKEN_KEY by mistake must
            # not wipe every researcher's permission; putting the key back restores them.
            logger.warning("a stored write token could not be decrypted", extra={"orcid": orcid})
            return None
        return token if token.expires_at > time.time() else None

    def delete(self, orcid: str) -> bool:
        """Forget the researcher's token; True when one was kept.

        :raises redis.RedisError: when Redis cannot answer.
        """
        if (client := self._client()) is not None:
            return bool(client.delete(write_token_key(orcid)))
        with self._guard:
            return self._memory.pop(orcid, None) is not None

    def _seal(self, token: WriteToken) -> bytes:
        if self._fernet is None:
            raise RuntimeError("WRITE_TOKEN_KEY is not set: no write token may be kept")
        data = {
            "access_token": token.access_token,
            "scope": list(token.scope),
            "expires_at": token.expires_at,
            "granted_at": token.granted_at,
        }
        return self._fernet.encrypt(json.dumps(data).encode("utf-8"))
