"""GA4GH Passport visas: our decisions and a researcher's qualifications, signed.

A visa issuer (GA4GH Passport v1.2, AAI profile "Visa Document Token Format"): each
visa is a JWS signed with our key (RS256 or ES256), ``kid`` and ``jku`` in its header,
``iss`` our PUBLIC_URL and ``sub`` the researcher's ORCID iD URI, and one
``ga4gh_visa_v1`` object:

- ``ControlledAccessGrants`` for each dataset the researcher's decision allows now
  (``by: dac``), ``value`` the dataset's URL, ``source`` the steward's organisation;
- ``AcceptedTermsAndPolicies`` for terms accepted here through issuing (``by: self``);
- ``ResearcherStatus`` for a qualification the policy maps to a researcher standard
  (``by: system``).

A visa never outlives what it asserts: its ``exp`` is the earliest of the lifetime
(VISA_LIFETIME, an hour), the decision's cache bound (its ``valid_until``, capped by
``cache_ttl``/DECISION_TTL) and the qualification's end. Visas are minted from the
decision in force at the request, so a revocation or a policy edit that refuses a
dataset stops new grants at once. Keys come from files (PASSPORT_SIGNING_KEY, and
PASSPORT_PUBLISHED_KEYS for keys still published during a rotation); joserfc signs.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from app.decision import Decision

VISA_TYP = "vnd.ga4gh.visa+jwt"
JWKS_PATH = "/.well-known/jwks.json"
NO_ORGANIZATION = "https://no.organization"  # the spec's source when none is named

logger = logging.getLogger(__name__)


class SigningKeyError(Exception):
    """A signing key that cannot be used; ``message`` names the setting."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SigningKey:
    key: ECKey | RSAKey
    alg: str
    kid: str

    @classmethod
    def from_pem(cls, pem: bytes, what: str, *, signs: bool = False) -> SigningKey:
        """An RSA (2048 bits or more) or P-256 EC key from PEM text: a private key, or a
        public one (an older key that is only published, never signs).

        :raises SigningKeyError: naming ``what`` for anything else.
        """
        raw = None
        for load in (
            lambda: serialization.load_pem_private_key(pem, password=None),
            lambda: serialization.load_pem_public_key(pem),
        ):
            try:
                raw = load()
                break
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
        if isinstance(raw, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
            if raw.key_size < 2048:
                raise SigningKeyError(f"{what}: an RSA key needs at least 2048 bits")
            key, alg = RSAKey.import_key(raw), "RS256"
        elif isinstance(raw, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
            if not isinstance(raw.curve, ec.SECP256R1):
                raise SigningKeyError(f"{what}: an EC key must be on P-256 (ES256)")
            key, alg = ECKey.import_key(raw), "ES256"
        else:
            raise SigningKeyError(f"{what}: not an RSA or EC (P-256) key in PEM form")
        if signs and not key.is_private:
            raise SigningKeyError(f"{what}: a public key cannot sign: give the private key")
        return cls(key, alg, key.thumbprint())

    @classmethod
    def from_file(cls, path: str, what: str, *, signs: bool = False) -> SigningKey:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"{what}: cannot read {path}: {exc.strerror}") from None
        return cls.from_pem(pem, what, signs=signs)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh P-256 key (the demo's, per run; never in production)."""
        key = ECKey.generate_key("P-256", private=True)
        return cls(key, "ES256", key.thumbprint())

    def public_jwk(self) -> dict:
        data = self.key.as_dict(private=False)
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}


class VisaSigner:
    """The key that signs, and every key published in our JWKS (it and older ones)."""

    def __init__(self, current: SigningKey, published: tuple[SigningKey, ...] = ()):
        self.current = current
        seen = {current.kid}
        self.published = [current]
        for key in published:
            if key.kid not in seen:
                seen.add(key.kid)
                self.published.append(key)

    def jwks(self) -> dict:
        return {"keys": [key.public_jwk() for key in self.published]}

    def sign(self, claims: dict, jku: str) -> str:
        """:raises ValueError: when the signing key is public only."""
        header = {"alg": self.current.alg, "typ": VISA_TYP, "kid": self.current.kid, "jku": jku}
        return jwt.encode(header, claims, self.current.key, algorithms=[self.current.alg])


def decode_unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWS we made, for showing it: no verification."""

    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


@dataclass(frozen=True)
class VisaSettings:
    issuer: str  # PUBLIC_URL, without a trailing slash
    orcid_base_url: str
    lifetime: int  # seconds


def _accepted_here(result) -> bool:
    """Whether the item that met a requirement is the one this service wrote when the
    researcher accepted the terms (another provider's item may meet it too, but says
    nothing of our terms)."""
    return any(
        c.ok and c.put_code == result.put_code and c.by_this_service for c in result.candidates
    )


def grant_values(policy, issuer: str) -> dict[str, str]:
    """Each dataset's ControlledAccessGrants value: its ``visa.value``, else ``issuer`` +
    its first path. A value two datasets would share is neither's: a grant of one would
    read as a grant of the other. (``policy check`` refuses two equal ``visa.value``s; a
    value equal to another dataset's default needs PUBLIC_URL, so only this sees it.)"""
    values = {
        key: dataset.visa_value or issuer + (dataset.paths[0] if dataset.paths else "")
        for key, dataset in policy.datasets.items()
    }
    shared = Counter(values.values())
    return {key: value for key, value in values.items() if shared[value] == 1}


def visa_claims(
    policy,
    decisions: list[Decision],
    *,
    orcid: str,
    settings: VisaSettings,
    cache_until,  # Decision -> datetime: how long the decision may be served (AccessChecker)
    now: dt.datetime,
    not_after: float | None = None,
) -> list[dict]:
    """The claims of each visa the researcher gets now, from the decisions in force;
    none outlives ``not_after`` (Unix), the credential that asked (a token's expiry, or
    the end of a session)."""
    issued_at = int(now.timestamp())
    longest = issued_at + settings.lifetime
    if not_after is not None:
        longest = min(longest, int(not_after))
    organisation = policy.organisation or settings.issuer or NO_ORGANIZATION
    subject = f"{settings.orcid_base_url.rstrip('/')}/{orcid}"
    grants = grant_values(policy, settings.issuer)
    found: dict[tuple[str, str], dict] = {}

    def add(kind: str, value: str, source: str, by: str, asserted: int, ends: int):
        exp = min(longest, ends)
        if exp <= issued_at:
            return  # already lapsed: no visa asserts it
        key = (kind, value)
        if key in found and found[key]["exp"] >= exp:
            return
        found[key] = {
            "iss": settings.issuer,
            "sub": subject,
            "iat": issued_at,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "ga4gh_visa_v1": {
                "type": kind,
                "asserted": asserted,
                "value": value,
                "source": source,
                "by": by,
            },
        }

    for decision in decisions:
        dataset = policy.datasets.get(decision.dataset)
        if dataset is None or decision.policy_version != policy.version:
            continue
        bound = int(cache_until(decision).timestamp())
        asserted = int(decision.decided_at.timestamp())
        if decision.allowed and decision.dataset not in grants:
            logger.warning(
                "no ControlledAccessGrants visa: another dataset's visa has the same value",
                extra={"event": "visa_value_shared", "dataset": decision.dataset},
            )
        elif decision.allowed:
            add(
                "ControlledAccessGrants",
                grants[decision.dataset],
                dataset.visa_source or organisation,
                "dac",
                asserted,
                bound,
            )
        for result in decision.requirements:
            if not result.met or result.qualification is None:
                continue
            rule = policy.qualifications.get(result.qualification)
            if rule is None:
                continue
            ends = bound
            if result.valid_until is not None:
                end_of_day = dt.datetime.combine(
                    result.valid_until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC
                )
                ends = min(ends, int(end_of_day.timestamp()))
            terms = rule.issue.accept_terms if rule.issue is not None else None
            if terms is not None and _accepted_here(result):
                add("AcceptedTermsAndPolicies", terms.url, organisation, "self", asserted, ends)
            if rule.researcher_status is not None:
                add(
                    "ResearcherStatus",
                    rule.researcher_status,
                    organisation,
                    "system",
                    asserted,
                    ends,
                )
    return sorted(
        found.values(), key=lambda c: (c["ga4gh_visa_v1"]["type"], c["ga4gh_visa_v1"]["value"])
    )
