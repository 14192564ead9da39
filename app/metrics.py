"""Prometheus metrics, correct under several gunicorn workers.

Under gunicorn each worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
gunicorn.conf.py before the workers start) and ``/metrics`` adds them up.
"""

from __future__ import annotations

import importlib.metadata
import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# Every counter's _created series doubles the exposition and means nothing to an alert.
disable_created_metrics()

AUTH_CHECKS = Counter(
    "gatekeeper_auth_checks_total",
    "Forward-auth checks by outcome: allow, deny, unauthenticated, no_dataset, error.",
    ["outcome"],
)
CACHE = Counter(
    "gatekeeper_cache_lookups_total",
    "Decision lookups: hit_memory (this worker), hit_store (Redis or process), miss.",
    ["result"],
)
DECISIONS = Counter(
    "gatekeeper_decisions_total",
    "Decisions made from an ORCID read, by outcome: allow, deny, error (ORCID unreadable).",
    ["outcome"],
)
ORCID_CALLS = Counter(
    "gatekeeper_orcid_requests_total",
    "HTTP requests to ORCID by endpoint and status (or 'error' when none came back).",
    ["endpoint", "status"],
)
ORCID_LATENCY = Histogram(
    "gatekeeper_orcid_request_seconds",
    "Latency of HTTP requests to ORCID, by endpoint.",
    ["endpoint"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POLICY_LOADS = Counter(
    "gatekeeper_policy_loads_total", "Policy loads and reloads, by result.", ["result"]
)
# The lowest over live workers: 0 as soon as any worker serves a policy its files no
# longer match.
POLICY_OK = Gauge(
    "gatekeeper_policy_ok",
    "1 while the policy files load; 0 while a broken edit leaves the previous policy serving.",
    multiprocess_mode="livemin",
)


POLICY_VERSION = Gauge(
    "gatekeeper_policy_version_info",
    "1 for the policy version a live worker serves (two during a reload).",
    ["version"],
    multiprocess_mode="livemax",
)
BUILD_INFO = Gauge(
    "gatekeeper_build_info",
    "1, labelled with the gatekeeper's and Python's versions.",
    ["version", "python"],
    multiprocess_mode="livemax",
)
AUTH_LATENCY = Histogram(
    "gatekeeper_auth_request_seconds",
    "Time /auth takes to answer a proxy, cached or not.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0),
)
TOKEN_CHECKS = Counter(
    "gatekeeper_token_checks_total",
    "Personal access tokens seen by /auth for the first time in a worker, by outcome: "
    "verified, malformed (no store lookup), unknown, expired, rate_limited.",
    ["outcome"],
)
SIGN_INS = Counter(
    "gatekeeper_sign_ins_total",
    "Sign-ins by outcome: ok, denied (at ORCID), failed (state, token or ID token), "
    "unavailable (ORCID or Redis).",
    ["outcome"],
)
_serving: list[str] = []  # the policy version this process has labelled
_policy_ok: list[bool] = []  # whether its last load worked
_build: list[tuple[str, str]] = []  # the versions it runs


def policy_loaded(ok: bool, version: str | None = None) -> None:
    """Count a policy (re)load and set the gauges; PolicyFile calls it after each load."""
    POLICY_LOADS.labels("ok" if ok else "error").inc()
    _policy_ok[:] = [ok]
    POLICY_OK.set(1 if ok else 0)
    if ok and version is not None:
        for old in _serving:
            POLICY_VERSION.labels(old).set(0)
        POLICY_VERSION.labels(version).set(1)
        _serving[:] = [version]


def build_info() -> None:
    """Label this process with the versions it runs (called once at start-up)."""
    try:
        version = importlib.metadata.version("orcid-gatekeeper")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    _build[:] = [(version, platform.python_version())]
    BUILD_INFO.labels(*_build[0]).set(1)


def worker_started() -> None:
    """Set the master's gauges again in a worker forked from it (gunicorn's
    post_worker_init). prometheus_client gives each process samples of its own, starting
    at 0, and gatekeeper_policy_ok is the lowest over live processes: a worker that had
    set nothing read as a broken policy."""
    for ok in _policy_ok:
        POLICY_OK.set(1 if ok else 0)
    for version in _serving:
        POLICY_VERSION.labels(version).set(1)
    for labels in _build:
        BUILD_INFO.labels(*labels).set(1)


def orcid_endpoint(path: str) -> str:
    """A low-cardinality name for an ORCID API path: never the iD or put-code."""
    parts = [p for p in path.split("/") if p]
    if "qualification" in parts:
        return "qualification"
    for name in ("qualifications", "person", "token"):
        if name in parts:
            return name
    return "other"


def render(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The exposition text: every worker's samples when running under gunicorn."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
