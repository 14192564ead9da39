"""The policy in force, reloaded off the request path when its files change."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from app.errors import PolicyError
from app.policy.loading import load_policy, policy_files
from app.policy.model import Policy

logger = logging.getLogger(__name__)


class PolicyFile:
    """The policy in force, reloaded when its files change (checked at most once a second).

    NOTE: a reload runs on a thread of its own and the new policy is swapped in when it is
    ready, so no request ever waits on reading and checking YAML. A reload that fails
    keeps the policy in force and records why in ``last_error``.
    """

    def __init__(self, path: str | Path, check_interval: float = 1.0, clock=None, on_load=None):
        self.path = Path(path)
        # Told after each reload: on_load(False, None), or on_load(True, the new version).
        self.on_load = on_load or (lambda ok, version: None)
        self._clock = clock or time.monotonic
        self.check_interval = check_interval
        self.current = load_policy(self.path)
        self._stamp = self._fingerprint()
        self._checked = self._clock()
        self.last_error: PolicyError | None = None
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._loaded: Policy | None = None  # a reload that finished, not yet swapped in

    def _fingerprint(self):
        try:
            return tuple(
                (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in policy_files(self.path)
            )
        except OSError:
            return None

    def refresh(self) -> bool:
        """Swap in a finished reload, or start one if the files changed; True on a change."""
        with self._lock:
            loaded, self._loaded = self._loaded, None
            if loaded is not None:
                changed = loaded.version != self.current.version
                self.current = loaded
                return changed
            now = self._clock()
            if self._loading is not None or now - self._checked < self.check_interval:
                return False
            self._checked = now
            stamp = self._fingerprint()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            self._loading = threading.Thread(target=self._reload, name="policy-reload", daemon=True)
            self._loading.start()
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a reload in progress, then swap it in (for tests and the CLI)."""
        loading = self._loading
        if loading is not None:
            loading.join(timeout)
        return self.refresh()

    def _reload(self):
        try:
            loaded = load_policy(self.path)
        except PolicyError as exc:
            with self._lock:
                self.last_error, self._loading = exc, None
            logger.error("policy reload failed, the previous policy stays: %s", exc.message)
            self.on_load(False, None)
            return
        except Exception:  # never lose the reload thread silently
            logger.exception("policy reload failed, the previous policy stays")
            with self._lock:
                self._loading = None
            self.on_load(False, None)
            return
        with self._lock:
            self.last_error, self._loaded, self._loading = None, loaded, None
        logger.info("policy reloaded: version %s", loaded.version)
        self.on_load(True, loaded.version)
