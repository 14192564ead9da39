"""Personal access tokens: how a script proves it acts for a researcher.

A token is ``gkpat_`` + 32 random base62 characters + a 6-character checksum of them
(CRC-32, as GitHub's tokens carry): secret scanners find leaked ones by the prefix, and a
mistyped token fails the checksum before any store lookup. The store never sees a
token: it keeps an HMAC-SHA-256 of it (the *digest*) under a key derived from
SECRET_KEY, so a copy of the store gives nothing that passes ``/auth``, and the record
there says whose it is, which datasets it may open and until when.

A token grants nothing of its own: ``/auth`` answers a token's request with the
researcher's own decision for the dataset (app/web/forward_auth.py), and only for the
datasets the token names.

Pure: no Flask, no Redis; the store keeps the records (app/cache.py).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import secrets
import string
import time
import zlib
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "gkpat_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
SECRET_CHARS = 32  # 190 bits
CHECKSUM_CHARS = 6  # 62**6 > 2**32
_SHAPE = re.compile(rf"^{PREFIX}([0-9A-Za-z]{{{SECRET_CHARS}}})([0-9A-Za-z]{{{CHECKSUM_CHARS}}})$")
LENGTH = len(PREFIX) + SECRET_CHARS + CHECKSUM_CHARS

DEFAULT_DAYS = 90
MAX_DAYS = 365
MAX_NAME = 64
MAX_TOKENS = 20  # per researcher: a list a person can still read and prune
ID_CHARS = 12  # of the digest, shown and used to revoke one token; says nothing of it


def _checksum(secret: str) -> str:
    value = zlib.crc32((PREFIX + secret).encode("ascii"))
    chars = []
    for _ in range(CHECKSUM_CHARS):
        value, digit = divmod(value, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def new_token() -> str:
    """A fresh token, from ``secrets`` (the OS's CSPRNG)."""
    secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_CHARS))
    return PREFIX + secret + _checksum(secret)


def is_well_formed(token: str) -> bool:
    """Whether ``token`` has our shape and its checksum holds (no store lookup)."""
    found = _SHAPE.match(token) if isinstance(token, str) and len(token) == LENGTH else None
    return found is not None and hmac.compare_digest(found[2], _checksum(found[1]))


def looks_like_token(text: str) -> bool:
    """Whether ``text`` is token-shaped, checksum or not (for telling a typo from none)."""
    return isinstance(text, str) and text.startswith(PREFIX)


class TokenHasher:
    """HMAC-SHA-256 of tokens under a key derived from SECRET_KEY (HKDF, its own label).

    NOTE: a derived key, not SECRET_KEY itself, so that the digests stored in Redis can
    never be confused with (or help forge) a cookie signature made with the same secret.
    Changing SECRET_KEY ends every token, as it ends every session.
    """

    def __init__(self, secret_key: str | bytes):
        raw = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"orcid-gatekeeper personal access tokens v1",
        ).derive(raw)

    def digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode("ascii"), sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store keeps about one token: never the token itself."""

    orcid: str
    name: str
    datasets: tuple[str, ...] | None  # None: every dataset the researcher may open
    created: float  # seconds since the epoch
    expires: float

    def opens(self, dataset: str) -> bool:
        """Whether the token is for ``dataset`` (the decision is still the researcher's)."""
        return self.datasets is None or dataset in self.datasets

    def is_live(self, now: float) -> bool:
        return self.expires > now

    def to_json(self) -> str:
        return json.dumps(
            {
                "orcid": self.orcid,
                "name": self.name,
                "datasets": list(self.datasets) if self.datasets is not None else None,
                "created": self.created,
                "expires": self.expires,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw) -> TokenRecord | None:
        """The record, or None for anything unreadable (which then opens nothing)."""
        if not isinstance(raw, (str, bytes)):
            return None
        try:
            data = json.loads(raw)
            datasets = data["datasets"]
            if datasets is not None:
                if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
                    return None
                datasets = tuple(datasets)
            record = cls(
                str(data["orcid"]),
                str(data["name"]),
                datasets,
                float(data["created"]),
                float(data["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return record


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One token as its owner's list shows it."""

    id: str
    record: TokenRecord
    last_used: float | None

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.record.created, dt.UTC)

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.record.expires, dt.UTC)

    @property
    def used(self) -> dt.datetime | None:
        if self.last_used is None:
            return None
        return dt.datetime.fromtimestamp(self.last_used, dt.UTC)


def token_id(digest: str) -> str:
    return digest[:ID_CHARS]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a token, or None."""
    if not name.strip():
        return "Give the token a name, such as the machine or script that uses it."
    if len(name) > MAX_NAME:
        return f"Use at most {MAX_NAME} characters for the name."
    if any(not char.isprintable() for char in name):
        return "Use letters, digits, spaces and punctuation only in the name."
    return None


class TokenRefused(Exception):
    """A token that cannot be made as asked; ``message`` says why, for the researcher."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AccessTokens:
    """Make, list and revoke one researcher's tokens in the store (Redis, or memory).

    Methods that touch the store return None when it could not answer (Redis down):
    the caller says so, and nothing is claimed done that was not.
    """

    def __init__(self, store, hasher: TokenHasher | None = None, clock=time.time):
        # No hasher: list and revoke only (a steward's command needs no SECRET_KEY).
        self.store, self.hasher, self.clock = store, hasher, clock

    def create(
        self, orcid: str, name: str, datasets: tuple[str, ...] | None, days: int
    ) -> tuple[str, TokenInfo] | None:
        """A new token (shown once: only its digest is kept) and how it is listed.

        :raises TokenRefused: a bad name or lifetime, a name in use, or too many tokens.
        """
        name = name.strip()
        if problem := name_problem(name):
            raise TokenRefused(problem)
        if not 1 <= days <= MAX_DAYS:
            raise TokenRefused(f"A token lasts from 1 to {MAX_DAYS} days.")
        if datasets is not None and not datasets:
            raise TokenRefused("Choose at least one dataset, or all of them.")
        existing = self.list(orcid)
        if existing is None:
            return None
        if any(info.record.name == name for info in existing):
            raise TokenRefused(f"You already have a token named {name!r}: choose another name.")
        if len(existing) >= MAX_TOKENS:
            raise TokenRefused(
                f"You have {MAX_TOKENS} tokens, the most one person may hold: revoke one first."
            )
        if self.hasher is None:
            raise RuntimeError("AccessTokens made without a TokenHasher cannot make tokens")
        token = new_token()
        digest = self.hasher.digest(token)
        now = self.clock()
        record = TokenRecord(orcid, name, datasets, now, now + days * 86400)
        if not self.store.put_token(digest, orcid, record.to_json(), days * 86400):
            return None
        return token, TokenInfo(token_id(digest), record, None)

    def verify(self, token: str) -> TokenRecord | None:
        """The live record of a token presented outside /auth, or None (malformed,
        unknown, expired, or the store cannot say)."""
        if self.hasher is None or not is_well_formed(token):
            return None
        raw = self.store.get_token(self.hasher.digest(token))
        record = TokenRecord.from_json(raw) if isinstance(raw, str) else None
        return record if record is not None and record.is_live(self.clock()) else None

    def list(self, orcid: str) -> list[TokenInfo] | None:
        """The researcher's live tokens, oldest first."""
        found = self.store.tokens_of(orcid)
        if found is None:
            return None
        now = self.clock()
        listed = []
        for digest, raw, used in found:
            record = TokenRecord.from_json(raw)
            if record is None or record.orcid != orcid or not record.is_live(now):
                continue
            try:
                last = float(used) if used is not None else None
            except (TypeError, ValueError):
                last = None
            listed.append(TokenInfo(token_id(digest), record, last))
        return sorted(listed, key=lambda info: info.record.created)

    def revoke(
        self, orcid: str, *, token: str | None = None, name: str | None = None
    ) -> int | None:
        """Revoke the researcher's token with this id, or every one with this name, or
        (neither given) all of them; how many were revoked."""
        if token is None and name is None:
            return self.store.take_tokens_of(orcid)
        found = self.store.tokens_of(orcid)
        if found is None:
            return None
        doomed = []
        for digest, raw, _ in found:
            record = TokenRecord.from_json(raw)
            if token is not None and token_id(digest) == token:
                doomed.append(digest)
            elif name is not None and record is not None and record.name == name:
                doomed.append(digest)
        if not doomed:
            return 0
        return self.store.delete_tokens(orcid, doomed)
