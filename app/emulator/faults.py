"""Fault knobs (added latency, error answers) and per-endpoint request counters.

Both are shared by the threads of a threaded server, so every read and write of them
holds one lock; the latency itself is slept outside it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, fields

from flask import Response

# The kinds of request the emulator counts and can fault, one per ORCID endpoint.
KINDS = (
    "authorize",
    "token",
    "qualifications",
    "qualification",
    "person",
    "discovery",
    "jwks",
    "userinfo",
    "revoke",
    "qualification_create",
    "qualification_update",
    "qualification_delete",
)

REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class FaultSettings:
    latency_ms: int = 0
    status: int | None = None  # answer with this status...
    rate: float = 1.0  # ...with this probability
    retry_after: int | None = None  # seconds; a 429 always carries one (default 1)
    endpoints: tuple[str, ...] = KINDS

    @classmethod
    def from_json(cls, data) -> FaultSettings:
        """Settings from the control API's JSON body.

        :raises TypeError: when the body is not a JSON object.
        :raises ValueError: naming every bad or unknown key.
        """
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object")
        problems = [
            f"unknown key '{k}'" for k in sorted(data.keys() - {f.name for f in fields(cls)})
        ]
        latency = data.get("latency_ms", 0)
        if not _is_int(latency) or not 0 <= latency <= 60_000:
            problems.append("latency_ms must be an integer from 0 to 60000")
        status = data.get("status")
        if status is not None and (not _is_int(status) or not 400 <= status <= 599):
            problems.append("status must be an integer from 400 to 599, or null")
        rate = data.get("rate", 1.0)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            problems.append("rate must be a number from 0 to 1")
        retry_after = data.get("retry_after")
        if retry_after is not None and (not _is_int(retry_after) or retry_after < 0):
            problems.append("retry_after must be a whole number of seconds, or null")
        endpoints = data.get("endpoints", list(KINDS))
        if not isinstance(endpoints, list) or not set(endpoints) <= set(KINDS):
            problems.append(f"endpoints must be a list drawn from {', '.join(KINDS)}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(latency, status, float(rate), retry_after, tuple(endpoints))

    def to_json(self) -> dict:
        return {**asdict(self), "endpoints": list(self.endpoints)}


class Faults:
    """Counts requests by kind and decides, per request, whether to delay or fail it."""

    def __init__(self, rng: random.Random | None = None):
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._settings = FaultSettings()
        self._counts = dict.fromkeys(KINDS, 0)

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self._settings = settings

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget the counts and switch every fault off."""
        with self._lock:
            self._settings = FaultSettings()
            self._counts = dict.fromkeys(KINDS, 0)

    def on_request(self, kind: str) -> Response | None:
        """Count one request of ``kind``; wait and return a fault response if one is due."""
        with self._lock:
            self._counts[kind] += 1
            settings = self._settings
            applies = kind in settings.endpoints
            failing = applies and settings.status is not None and self._rng.random() < settings.rate
        if applies and settings.latency_ms:
            time.sleep(settings.latency_ms / 1000)
        if failing:
            return _fault_response(settings)
        return None


def _fault_response(settings: FaultSettings) -> Response:
    status = settings.status
    reason = REASONS.get(status, "Error")
    body = {
        "response-code": status,
        "developer-message": f"{status} {reason}: a fault injected by the ORCID emulator",
        "user-message": "Something went wrong. Please try again later.",
        "error-code": None,
        "more-info": "https://members.orcid.org/api/resources/troubleshooting",
    }
    response = Response(json.dumps(body), status, mimetype="application/json")
    retry_after = settings.retry_after
    if retry_after is None and status == 429:
        retry_after = 1
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
