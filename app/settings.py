"""Settings: the one place that reads environment variables.

Every variable is read once, converted and checked here; a problem raises
``ConfigError`` naming the variable, with every problem found listed together.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from app.errors import ConfigError
from app.orcid_id import is_valid_orcid_id, parse_orcid_id

# ORCID's OAuth scopes (ORCID-Source ScopePathType, the ones a sign-in may ask for).
SCOPES = (
    "/authenticate",
    "/read-limited",
    "/read-public",
    "/activities/update",
    "/person/update",
    "openid",
)
# Sentinel and Cluster forms: app/redis_connection.py (which parses and checks them).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
# APP- and 16 letters or digits, or a legacy client's iD-shaped ID (common-3.0.xsd).
_CLIENT_ID = re.compile(r"^(APP-[0-9A-Za-z]{16}|[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X])\Z")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# STEWARD_CONTACT: one address, nothing a mail client would read as a second one.
_EMAIL = re.compile(r"^[^@\s<>\"',;:()\[\]]+@[^@\s<>\"',;:()\[\]]+\.[A-Za-z0-9-]{2,}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LOGO_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


@dataclass(frozen=True, slots=True)
class Settings:
    orcid_base_url: str = field(default="https://orcid.org", metadata={"env": "ORCID_BASE_URL"})
    orcid_api_url: str = field(
        default="https://pub.orcid.org/v3.0", metadata={"env": "ORCID_API_URL"}
    )
    orcid_client_id: str | None = field(default=None, metadata={"env": "ORCID_CLIENT_ID"})
    orcid_client_secret: str | None = field(default=None, metadata={"env": "ORCID_CLIENT_SECRET"})
    orcid_scope: str = field(default="/authenticate", metadata={"env": "ORCID_SCOPE"})
    public_url: str | None = field(default=None, metadata={"env": "PUBLIC_URL"})
    policy_path: str = field(default="policies/", metadata={"env": "POLICY_PATH"})
    redis_url: str | None = field(default=None, metadata={"env": "REDIS_URL"})
    secret_key: str | None = field(default=None, metadata={"env": "SECRET_KEY"})
    # Additions to the contract: tuning knobs with safe defaults.
    demo: bool = field(default=False, metadata={"env": "GATEKEEPER_DEMO"})
    orcid_timeout: float = field(default=8.0, metadata={"env": "ORCID_TIMEOUT"})
    # Read /person beside the summary, because ORCID's Public API does not check a record's
    # status on qualification reads. None: yes exactly when ORCID_API_URL is a pub. host.
    orcid_check_record_status: bool | None = field(
        default=None, metadata={"env": "ORCID_CHECK_RECORD_STATUS"}
    )
    # Items read in full per decision; a record with more candidates is refused.
    orcid_max_items: int = field(default=50, metadata={"env": "ORCID_MAX_ITEMS"})
    allowed_redirect_hosts: tuple = field(default=(), metadata={"env": "ALLOWED_REDIRECT_HOSTS"})
    auth_redirect: bool = field(default=False, metadata={"env": "AUTH_REDIRECT"})
    refusal_ttl: int = field(default=60, metadata={"env": "REFUSAL_TTL"})
    decision_ttl: int = field(default=3600, metadata={"env": "DECISION_TTL"})
    session_lifetime: int = field(default=43200, metadata={"env": "SESSION_LIFETIME"})
    recheck_interval: int = field(default=10, metadata={"env": "RECHECK_INTERVAL"})
    # Days the decision log keeps an entry (app/decision_log.py DEFAULT_RETENTION_DAYS).
    decision_log_retention: int = field(default=90, metadata={"env": "DECISION_LOG_RETENTION"})
    # Set by gunicorn.conf.py so that /metrics adds up every worker's samples.
    metrics_dir: str | None = field(default=None, metadata={"env": "PROMETHEUS_MULTIPROC_DIR"})
    # What researchers see: the site's name, whom to ask about access, and a logo (a file
    # we serve at /logo, or a URL under PUBLIC_URL: the pages' CSP allows img-src 'self').
    site_name: str = field(default="Dataset access", metadata={"env": "SITE_NAME"})
    steward_contact: str | None = field(default=None, metadata={"env": "STEWARD_CONTACT"})
    logo_path: str | None = field(default=None, metadata={"env": "LOGO_PATH"})
    # Who may open the steward console (/steward/): comma-separated ORCID iDs.
    steward_orcids: tuple = field(default=(), metadata={"env": "STEWARD_ORCIDS"})
    # Encrypts the ORCID tokens that may write to researchers' records (issuing): Fernet
    # keys, comma-separated, newest first; older ones still decrypt (key rotation). None:
    # this service never keeps such a token, so it cannot issue qualifications.
    write_token_key: str | None = field(default=None, metadata={"env": "WRITE_TOKEN_KEY"})
    # GA4GH Passport visas (app/passports.py): the signing key (a PEM file: RSA of 2048
    # bits or more, or EC P-256), older keys still published in our JWKS during a
    # rotation (comma-separated PEM files), and how long a visa lasts at most. No key:
    # no visas (the demo makes one per run).
    passport_signing_key: str | None = field(default=None, metadata={"env": "PASSPORT_SIGNING_KEY"})
    # NOTE: a string, not a tuple: tuple settings are lower-cased, and these are paths.
    passport_published_keys: str | None = field(
        default=None, metadata={"env": "PASSPORT_PUBLISHED_KEYS"}
    )
    visa_lifetime: int = field(default=3600, metadata={"env": "VISA_LIFETIME"})
    # Personal access tokens (scripts): failed lookups per client address and minute
    # before that address's unknown tokens are refused unasked for the rest of it.
    token_failures_per_minute: int = field(
        default=30, metadata={"env": "TOKEN_FAILURES_PER_MINUTE"}
    )
    # Sign-ins started from one client address per minute: each keeps its state in the
    # store for 10 minutes, so an unlimited /login would let anyone fill Redis.
    sign_ins_per_minute: int = field(default=300, metadata={"env": "SIGN_INS_PER_MINUTE"})
    # Peers whose X-Forwarded-For names the client (the proxy): addresses or networks, or
    # "*". gunicorn reads the same variable, with the same default, for X-Forwarded-Proto.
    forwarded_allow_ips: tuple = field(
        default=("127.0.0.1", "::1"), metadata={"env": "FORWARDED_ALLOW_IPS"}
    )

    @classmethod
    def from_env(cls, environ=None) -> Settings:
        """Build settings from the environment (``os.environ`` unless given).

        :raises ConfigError: naming every variable that is malformed.
        """
        environ = os.environ if environ is None else environ
        values, problems = {}, []
        for spec in fields(cls):
            name = spec.metadata["env"]
            raw = environ.get(name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            try:
                values[spec.name] = _convert(spec.type, raw)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        settings = cls(**values)
        problems.extend(settings.problems())
        if problems:
            raise ConfigError("; ".join(problems))
        return settings

    def problems(self) -> list[str]:
        """What is wrong or contradictory, one message per variable."""
        found = []
        for name, url in (
            ("ORCID_BASE_URL", self.orcid_base_url),
            ("ORCID_API_URL", self.orcid_api_url),
            ("PUBLIC_URL", self.public_url),
        ):
            parts = urlsplit(url) if url is not None else None
            if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
                found.append(f"{name}: {url!r} is not an http(s) URL with a host")
        if self.orcid_client_id and not _CLIENT_ID.match(self.orcid_client_id):
            found.append(
                f"ORCID_CLIENT_ID: {self.orcid_client_id!r} is not an ORCID client ID "
                "(APP- and 16 letters or digits)"
            )
        unknown = [s for s in self.orcid_scope.split() if s not in SCOPES]
        if unknown or not self.orcid_scope.split():
            found.append(
                f"ORCID_SCOPE: {' '.join(unknown) or 'empty'} is not an ORCID scope "
                f"(known: {', '.join(SCOPES)})"
            )
        if self.redis_url is not None:
            from app.redis_connection import url_problem  # stdlib only, like this module

            # The message shows the URL with its passwords as ***.
            if problem := url_problem(self.redis_url):
                found.append(f"REDIS_URL: {problem}")
        if bool(self.orcid_client_id) != bool(self.orcid_client_secret):
            found.append("ORCID_CLIENT_SECRET: ORCID_CLIENT_ID and ORCID_CLIENT_SECRET go together")
        if self.orcid_timeout <= 0 or self.orcid_timeout > 30:
            found.append("ORCID_TIMEOUT: must be between 0 and 30 seconds")
        if not 1 <= self.orcid_max_items <= 1000:
            found.append("ORCID_MAX_ITEMS: must be between 1 and 1000")
        for name, value in (
            ("REFUSAL_TTL", self.refusal_ttl),
            ("DECISION_TTL", self.decision_ttl),
            ("SESSION_LIFETIME", self.session_lifetime),
            ("RECHECK_INTERVAL", self.recheck_interval),
            ("DECISION_LOG_RETENTION", self.decision_log_retention),
            ("TOKEN_FAILURES_PER_MINUTE", self.token_failures_per_minute),
            ("SIGN_INS_PER_MINUTE", self.sign_ins_per_minute),
        ):
            if value <= 0:
                found.append(f"{name}: must be greater than 0")
        if not 60 <= self.visa_lifetime <= 86400:
            found.append("VISA_LIFETIME: must be between 60 and 86400 seconds")
        for entry in self.forwarded_allow_ips:
            if entry != "*" and forwarder_network(entry) is None:
                found.append(f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address, a network or *")
        if self.write_token_key is not None and not self.write_token_keys:
            found.append(
                "WRITE_TOKEN_KEY: each comma-separated key must be a Fernet key (32 bytes, "
                "URL-safe base64: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
        return found

    def service_problems(self) -> list[str]:
        """What the web service needs beyond the command line's settings."""
        found = []
        if not self.secret_key and not self.demo:
            found.append("SECRET_KEY: required to sign cookies (or set GATEKEEPER_DEMO=1)")
        elif self.secret_key and len(self.secret_key) < 16 and not self.demo:
            found.append("SECRET_KEY: use at least 16 random characters")
        if not self.orcid_client_id:
            found.append("ORCID_CLIENT_ID: required for ORCID sign-in")
        if self.public_url is not None and not self.demo:
            parts = urlsplit(self.public_url)
            if parts.scheme == "http" and not is_loopback_host(parts.hostname):
                # ORCID registers only HTTPS redirect URIs (loopback excepted, for testing).
                found.append(
                    f"PUBLIC_URL: {self.public_url!r} must be https (ORCID requires HTTPS "
                    "redirect URIs); plain http only on loopback or with GATEKEEPER_DEMO=1"
                )
        for name, url in (
            ("ORCID_BASE_URL", self.orcid_base_url),
            ("ORCID_API_URL", self.orcid_api_url),
        ):
            parts = urlsplit(url)
            if parts.scheme == "http" and not is_loopback_host(parts.hostname):
                # The client secret, codes and researchers' tokens would cross in clear.
                found.append(
                    f"{name}: {url!r} must be https (the client secret and researchers' "
                    "tokens go there); plain http only on loopback (an emulator)"
                )
        found.extend(self.passport_problems())
        if "/read-limited" in self.orcid_scope.split() and "//pub." in self.orcid_api_url:
            found.append(
                "ORCID_SCOPE: /read-limited needs the member API; set ORCID_API_URL to "
                "https://api.orcid.org/v3.0"
            )
        if self.write_token_key and "//pub." in self.orcid_api_url:
            found.append(
                "WRITE_TOKEN_KEY: issuing qualifications writes through the member API; set "
                "ORCID_API_URL to https://api.orcid.org/v3.0 (or unset WRITE_TOKEN_KEY)"
            )
        found.extend(self.page_problems())
        bad = [value for value in self.steward_orcids if not is_valid_orcid_id(value)]
        if bad:
            found.append(
                f"STEWARD_ORCIDS: {', '.join(map(repr, bad))} "
                f"{'is not an ORCID iD' if len(bad) == 1 else 'are not ORCID iDs'} "
                "(16 digits in four groups with a valid check digit, like 0000-0002-1825-0097)"
            )
        return found

    def passport_problems(self) -> list[str]:
        """What is wrong with the visa signing keys (each file is read and parsed)."""
        from app.passports import SigningKey, SigningKeyError

        found = []
        files = (
            [("PASSPORT_SIGNING_KEY", self.passport_signing_key)]
            if self.passport_signing_key
            else []
        )
        if self.published_key_files and not self.passport_signing_key:
            found.append("PASSPORT_PUBLISHED_KEYS: needs PASSPORT_SIGNING_KEY, the key that signs")
        files += [("PASSPORT_PUBLISHED_KEYS", path) for path in self.published_key_files]
        for name, path in files:
            try:
                SigningKey.from_file(path, name, signs=name == "PASSPORT_SIGNING_KEY")
            except SigningKeyError as exc:
                found.append(exc.message)
        if self.passport_signing_key and not self.public_url and not self.demo:
            found.append("PUBLIC_URL: required with PASSPORT_SIGNING_KEY (visas name it as iss)")
        return found

    def page_problems(self) -> list[str]:
        """What is wrong with SITE_NAME, STEWARD_CONTACT and LOGO_PATH."""
        found = []
        if len(self.site_name) > 80 or _CONTROL.search(self.site_name):
            found.append("SITE_NAME: use at most 80 characters, without control characters")
        if self.steward_contact is not None and self.steward_href is None:
            found.append(
                f"STEWARD_CONTACT: {self.steward_contact!r} is neither an email address "
                "nor an http(s) URL"
            )
        logo = self.logo_path
        if logo is None:
            return found
        parts = urlsplit(logo)
        if parts.scheme in ("http", "https"):
            ours = urlsplit(self.public_url or "")
            if not self.public_url or (parts.scheme, parts.netloc.lower()) != (
                ours.scheme,
                ours.netloc.lower(),
            ):
                found.append(
                    f"LOGO_PATH: {logo!r} is not under PUBLIC_URL (the pages' "
                    "Content-Security-Policy shows images from this site only)"
                )
        elif not os.path.isfile(logo):
            found.append(f"LOGO_PATH: {logo!r} is not a file, nor a URL under PUBLIC_URL")
        elif os.path.splitext(logo)[1].lower() not in LOGO_TYPES:
            found.append(f"LOGO_PATH: {logo!r} must be one of {', '.join(LOGO_TYPES)}")
        elif os.path.getsize(logo) > 1024 * 1024:
            found.append(f"LOGO_PATH: {logo!r} is over 1 MiB")
        return found

    @property
    def steward_href(self) -> str | None:
        """STEWARD_CONTACT as a link: ``mailto:`` for an email address; None if neither."""
        contact = self.steward_contact
        if contact is None:
            return None
        if _EMAIL.match(contact.removeprefix("mailto:")):
            return "mailto:" + contact.removeprefix("mailto:")
        parts = urlsplit(contact)
        if (
            parts.scheme in ("http", "https")
            and parts.hostname
            and not _CONTROL.search(contact)
            and " " not in contact
        ):
            return contact
        return None

    @property
    def write_token_keys(self) -> tuple[str, ...]:
        """WRITE_TOKEN_KEY's keys, newest first; empty when unset or when one is malformed."""
        from cryptography.fernet import Fernet

        keys = tuple(k.strip() for k in (self.write_token_key or "").split(",") if k.strip())
        try:
            for key in keys:
                Fernet(key)
        except ValueError:
            return ()
        return keys

    @property
    def published_key_files(self) -> tuple[str, ...]:
        """PASSPORT_PUBLISHED_KEYS as paths, in order."""
        raw = self.passport_published_keys or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    @property
    def stewards(self) -> frozenset[str]:
        """The canonical iDs in STEWARD_ORCIDS (invalid ones stop start-up, above)."""
        return frozenset(parse_orcid_id(v) for v in self.steward_orcids if is_valid_orcid_id(v))

    @property
    def logo_file(self) -> str | None:
        """LOGO_PATH when it names a file on disk, which the pages serve at /logo."""
        if self.logo_path is None or urlsplit(self.logo_path).scheme in ("http", "https"):
            return None
        return self.logo_path

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure unless we are served over plain http on loopback."""
        if self.public_url is None:
            return True
        parts = urlsplit(self.public_url)
        return not (parts.scheme == "http" and is_loopback_host(parts.hostname))


def is_loopback_host(hostname: str | None) -> bool:
    """Whether a URL's hostname (urlsplit's: lower-case, no brackets) names loopback."""
    return hostname in ("127.0.0.1", "localhost", "::1")


def forwarder_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A FORWARDED_ALLOW_IPS entry as a network (an address is a network of one)."""
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _convert(kind: str, raw: str):
    if kind in ("bool", "bool | None"):
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a yes/no value")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if kind == "tuple":
        return tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        # nan passes every range check (each comparison is false), and inf never ends.
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a number")
        return value
    return raw
