"""Authorization codes and access tokens the emulator has issued, shared by its threads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LIFETIME = 600.0  # seconds; ORCID's codes are short-lived and single-use
# RFC 7636 4.1: a verifier is 43 to 128 unreserved characters; an S256 challenge is the
# unpadded base64url of a SHA-256 digest, 43 characters.
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


@dataclass(frozen=True, slots=True)
class Grant:
    """What an access token (or the code it came from) allows."""

    client_id: str
    scope: str  # space separated, as requested
    orcid: str | None = None  # None for a client-credentials token
    redirect_uri: str | None = None
    nonce: str | None = None  # from the authorize request, for the ID token
    auth_time: int | None = None  # when the researcher signed in (seconds since the epoch)
    code_challenge: str | None = None  # PKCE (S256), when the authorize request sent one

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def may_read_limited(self, orcid: str) -> bool:
        """Whether this token may see ``limited`` items on the record ``orcid``."""
        return self.orcid == orcid and "/read-limited" in self.scopes


class TokenStore:
    """Issues single-use codes and bearer tokens; safe to use from many threads."""

    def __init__(
        self, code_lifetime: float = CODE_LIFETIME, clock: Callable[[], float] = time.monotonic
    ):
        self.code_lifetime = code_lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[Grant, float]] = {}
        self._tokens: dict[str, Grant] = {}  # access token -> grant
        self._refresh: dict[str, str] = {}  # refresh token -> its access token

    def issue_code(self, grant: Grant) -> str:
        with self._lock:
            code = _new_code()
            while code in self._codes:
                code = _new_code()
            self._codes[code] = (grant, self.clock() + self.code_lifetime)
            return code

    def redeem_code(
        self,
        code: str,
        client_id: str,
        redirect_uri: str | None,
        code_verifier: str | None = None,
    ) -> Grant | None:
        """The grant behind ``code`` if it is live and matches; the code is spent either way.

        A code issued with a PKCE challenge needs the verifier it was made from (RFC 7636
        4.6); one issued without a challenge ignores a verifier, as PKCE is optional.
        """
        with self._lock:
            pending = self._codes.pop(code, None)
        if pending is None:
            return None
        grant, expires_at = pending
        if self.clock() > expires_at:
            return None
        if grant.client_id != client_id or grant.redirect_uri != redirect_uri:
            return None
        if grant.code_challenge is not None and not verifier_matches(
            code_verifier, grant.code_challenge
        ):
            return None
        return grant

    def issue_token(self, grant: Grant) -> tuple[str, str]:
        """A new (access token, refresh token) pair for ``grant``."""
        access_token, refresh_token = str(uuid.uuid4()), str(uuid.uuid4())
        with self._lock:
            self._tokens[access_token] = grant
            self._refresh[refresh_token] = access_token
        return access_token, refresh_token

    def grant_for_refresh(self, refresh_token: str, client_id: str) -> tuple[str, Grant] | None:
        """(access token, grant) behind a live refresh token of ``client_id``, or None."""
        with self._lock:
            access_token = self._refresh.get(refresh_token)
            grant = self._tokens.get(access_token) if access_token else None
        if grant is None or grant.client_id != client_id:
            return None
        return access_token, grant

    def grant_for(self, access_token: str) -> Grant | None:
        with self._lock:
            return self._tokens.get(access_token)

    def revoke(
        self, *, token: str | None = None, orcid: str | None = None, client_id: str | None = None
    ) -> int:
        """Forget one token, or every token for a researcher; returns how many went.

        ``token`` may be an access or a refresh token: ORCID keeps the two as one row, so
        revoking either ends both. With ``client_id``, only that client's tokens go.
        """
        with self._lock:
            access_token = self._refresh.get(token, token) if token is not None else None
            doomed = [
                access
                for access, grant in self._tokens.items()
                if (access == access_token or (orcid is not None and grant.orcid == orcid))
                and (client_id is None or grant.client_id == client_id)
            ]
            for access in doomed:
                del self._tokens[access]
            gone = set(doomed)
            self._refresh = {r: a for r, a in self._refresh.items() if a not in gone}
            return len(doomed)


def s256_challenge(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded.

    NOTE: written out here rather than taken from Authlib, which makes the client's
    challenge: an emulator that shared the client's code would agree with its bugs.
    """
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    """Whether ``verifier`` is well formed and hashes to the S256 ``challenge``."""
    if not verifier or not VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
