"""ID tokens: RS256 JWTs signed with the emulator's own RSA key, as ORCID issues them.

Claims follow ORCID's legacy ``OpenIDConnectTokenEnhancer`` (orcid-api.md §2.5): ``iss``,
``sub``, ``aud``, ``iat``, ``exp`` (iat + 24 h), ``jti``, ``at_hash``, ``auth_time``,
``nonce`` when one was sent, the name claims when the name is public (``name`` is the
credit name only), and for member clients ``amr``: one string, ``"mfa"`` when the
researcher uses two-factor sign-in, else ``"pwd"``, where OIDC Core wants a list.

Tokens are signed with joserfc, the JOSE library Authlib itself verifies ID tokens with;
``authlib.jose`` is deprecated and warns on import.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.emulator.personas import Persona
from app.emulator.tokens import Grant

ID_TOKEN_LIFETIME = 24 * 60 * 60  # seconds; ORCID's legacy enhancer: exp = iat + 24 h
ALGORITHM = "RS256"

# The ways a test can ask for ID tokens to be wrong (POST /_emulator/oidc).
TAMPERS = ("none", "signature", "issuer", "audience", "nonce", "expired", "at_hash", "subject")
# A valid iD that is not the signed-in researcher's: the token answer names the real one.
WRONG_SUBJECT = "0000-0001-5109-3700"
WRONG_ISSUER = "https://issuer.invalid"
WRONG_AUDIENCE = "APP-NOTTHEAUDIENCE00"
# Well past the two minutes of clock leeway a verifier such as Authlib allows.
EXPIRED_BY = 60 * 60


class IdTokens:
    """Signs ID tokens with the emulator's key, wrong in one chosen way when a test asks.

    Shared by the threads of a threaded server: the tamper setting is read and written
    under a lock.
    """

    def __init__(
        self,
        signing_key: rsa.RSAPrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._key = _jwk(signing_key or _new_rsa_key())
        self.kid = "emulator-" + self._key.thumbprint()
        self.clock = clock
        self._lock = threading.Lock()
        self._tamper = "none"
        self._stray_key: RSAKey | None = None  # made on first use: not every app needs one

    @property
    def tamper(self) -> str:
        with self._lock:
            return self._tamper

    def set_tamper(self, tamper: str) -> None:
        """Make the ID tokens issued from now on wrong in this one way ("none": right).

        :raises ValueError: for a mode not in TAMPERS.
        """
        if tamper not in TAMPERS:
            raise ValueError(f"tamper must be one of {', '.join(TAMPERS)}")
        with self._lock:
            self._tamper = tamper

    def reset(self) -> None:
        self.set_tamper("none")

    def jwks(self) -> dict:
        """The public key set, shaped as ORCID's: no ``alg`` member (orcid-api.md §2.5)."""
        public = self._key.as_dict(private=False)
        key = {"kty": "RSA", "e": public["e"], "use": "sig", "kid": self.kid, "n": public["n"]}
        return {"keys": [key]}

    def issue(
        self, grant: Grant, access_token: str, persona: Persona, issuer: str, *, member: bool
    ) -> str:
        """The ID token for a code exchange that asked for ``openid``, for a member client
        or not (only members get ``amr``)."""
        tamper = self.tamper
        now = int(self.clock())
        if tamper == "expired":
            now -= ID_TOKEN_LIFETIME + EXPIRED_BY
        nonce = grant.nonce
        if tamper == "nonce":
            nonce = f"not-{nonce}" if nonce else "a-nonce-nobody-sent"
        # A wrong at_hash is the hash of another token: well formed, and not this one's.
        hashed = f"not-{access_token}" if tamper == "at_hash" else access_token
        claims = {
            "at_hash": _at_hash(hashed),
            "aud": WRONG_AUDIENCE if tamper == "audience" else grant.client_id,
            "sub": WRONG_SUBJECT if tamper == "subject" else grant.orcid,
            "auth_time": min(grant.auth_time or now, now),
            "iss": WRONG_ISSUER if tamper == "issuer" else issuer,
            "exp": now + ID_TOKEN_LIFETIME,
            "iat": now,
            "jti": str(uuid.uuid4()),
            # The enhancer adds a name claim only when the record has it (no nulls).
            **{k: v for k, v in name_claims(persona).items() if v is not None},
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if member:
            # OpenIDConnectTokenEnhancer: members only, a string, from ProfileEntity.getUsing2FA.
            claims["amr"] = "mfa" if persona.mfa else "pwd"
        # A wrong signature keeps the real kid, so a verifier finds the key and the
        # signature check itself is what fails.
        key = self._stray() if tamper == "signature" else self._key
        return jwt.encode({"kid": self.kid, "alg": ALGORITHM}, claims, key, algorithms=[ALGORITHM])

    def _stray(self) -> RSAKey:
        with self._lock:
            if self._stray_key is None:
                self._stray_key = _jwk(_new_rsa_key())
            return self._stray_key


def name_claims(persona: Persona) -> dict[str, str | None]:
    """``name`` (the credit name), ``family_name``, ``given_name``: None unless public.

    As ORCID's OpenIDConnectTokenEnhancer and OpenIDConnectUserInfo read the public name:
    ``name`` is the credit name only, never given and family names joined.
    """
    name = persona.name
    if name.visibility != "public":
        return {"name": None, "family_name": None, "given_name": None}
    return {"name": name.credit, "family_name": name.family, "given_name": name.given}


def _at_hash(access_token: str) -> str:
    # OIDC Core 3.1.3.6: base64url of the left half of the SHA-256 of the token's ASCII.
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: rsa.RSAPrivateKey) -> RSAKey:
    return RSAKey.import_key(key)
