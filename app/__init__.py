"""orcid-gatekeeper: gate research datasets on qualifications in ORCID records.

``create_app()`` does all the wiring, so importing ``app.policy`` (the CLI, core tests)
never loads Flask.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from app.errors import ConfigError, PolicyError
from app.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Gatekeeper:
    """Everything the web layer needs, kept in ``app.extensions["gatekeeper"]``."""

    settings: Settings
    policy_file: object  # PolicyFile
    store: object  # MemoryStore or RedisStore
    checker: object  # AccessChecker
    write_tokens: object = None  # WriteTokens: researchers' tokens that may write
    issuer: object = None  # Issuer: adds and withdraws our qualifications on records
    access_tokens: object = None  # AccessTokens: researchers' personal access tokens
    token_hasher: object = None  # TokenHasher: the digests tokens are stored under
    visa_signer: object = None  # VisaSigner: GA4GH visas; None when no key is set
    token_failures: object = None  # TokenFailures: unknown tokens per client address


def create_app(settings: Settings | None = None, *, orcid_reader=None, store=None):
    """Build the Flask app from ``settings`` (default: the environment).

    :raises ConfigError: naming the variable, for a missing or contradictory setting
        or a policy that does not load.
    """
    from flask import Flask

    from app import metrics
    from app.access import AccessChecker
    from app.access_tokens import AccessTokens, TokenHasher
    from app.cache import MemoryStore, RedisStore
    from app.decision_log import decision_log_for
    from app.issuing import Issuer
    from app.orcid_client import OrcidClient
    from app.orcid_writer import OrcidWriter
    from app.policy import PolicyFile
    from app.web import (
        access_log,
        earning,
        errors,
        forward_auth,
        health,
        login,
        pages,
        passports,
        security,
        steward,
        tokens,
    )
    from app.write_tokens import WriteTokens

    settings = settings or Settings.from_env()
    problems = settings.service_problems()
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        policy_file = PolicyFile(
            settings.policy_path,
            on_load=metrics.policy_loaded,
        )
        metrics.policy_loaded(True, policy_file.current.version)
        metrics.build_info()
    except PolicyError as exc:
        raise ConfigError(f"POLICY_PATH: {exc.message}") from None

    if store is None and settings.redis_url:
        store = RedisStore.from_url(settings.redis_url)
    elif store is None:
        if not settings.demo:
            logger.warning(
                "REDIS_URL is not set: decisions and sessions live in this process only; "
                "run a single worker, or set REDIS_URL"
            )
        store = MemoryStore()
    reader = orcid_reader or OrcidClient.from_settings(settings)
    write_tokens = WriteTokens(store, settings.write_token_keys)
    checker = AccessChecker(
        policy_file,
        reader,
        store,
        write_tokens=write_tokens,
        own_client_id=settings.orcid_client_id,
        refusal_ttl=settings.refusal_ttl,
        max_ttl=settings.decision_ttl,
        wait_timeout=settings.orcid_timeout + 1,
        decision_log=decision_log_for(store, settings.decision_log_retention),
    )

    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.secret_key or secrets.token_urlsafe(32),
        SESSION_COOKIE_NAME="gatekeeper_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    issuer = Issuer(
        reader=reader,
        writer=OrcidWriter(settings.orcid_api_url),
        tokens=write_tokens,
        client_id=settings.orcid_client_id,
        decision_log=checker.decision_log,
        forget_decisions=store.forget_decisions,
    )
    hasher = TokenHasher(app.config["SECRET_KEY"])
    visa_signer = _visa_signer(settings)
    app.extensions["gatekeeper"] = Gatekeeper(
        settings,
        policy_file,
        store,
        checker,
        write_tokens,
        issuer,
        access_tokens=AccessTokens(store, hasher),
        token_hasher=hasher,
        visa_signer=visa_signer,
        token_failures=forward_auth.TokenFailures(store, settings.token_failures_per_minute),
    )
    login.init_app(app)
    app.register_blueprint(login.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(steward.bp)
    app.register_blueprint(earning.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(passports.bp)
    errors.init_app(app)
    security.init_app(app)
    access_log.init_app(app)
    app.wsgi_app = forward_auth.ForwardAuth(app.wsgi_app, app)
    _log_start(settings, policy_file.current, store)
    return app


def _visa_signer(settings):
    """The key that signs GA4GH visas (and the older ones still published), or None.

    Never generated outside the demo: a key made at start would change at each restart
    and differ between instances, and every visa signed with it would stop verifying.
    """
    from app.passports import SigningKey, SigningKeyError, VisaSigner

    if settings.passport_signing_key:
        try:
            current = SigningKey.from_file(
                settings.passport_signing_key, "PASSPORT_SIGNING_KEY", signs=True
            )
            older = tuple(
                SigningKey.from_file(path, "PASSPORT_PUBLISHED_KEYS")
                for path in settings.published_key_files
            )
        except SigningKeyError as exc:
            raise ConfigError(exc.message) from None
        return VisaSigner(current, older)
    if settings.demo:
        return VisaSigner(SigningKey.generate())
    return None


def _log_start(settings, policy, store) -> None:
    """One line an operator reads first: what this instance serves and what it talks to."""
    if not settings.redis_url:
        redis = "not configured (sessions and decisions in this process)"
    else:
        redis = "answered" if store.ping() else "did not answer"
    logger.info(
        "started",
        extra={
            "policy_version": policy.version,
            "policy_path": settings.policy_path,
            "orcid_base_url": settings.orcid_base_url,
            "orcid_api_url": settings.orcid_api_url,
            "redis": redis,
        },
    )
