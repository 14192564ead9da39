"""The policy in force, reloaded off the request path when its files change."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from pathlib import Path

from app.errors import PolicyError
from app.policy.loading import load_policy, policy_files

logger = logging.getLogger(__name__)


class PolicyFile:
    """The policy in force, reloaded when its files change (checked at most once a second).

    NOTE: a reload runs on a thread of its own and the new policy is swapped in when it is
    ready, so no request ever waits on reading and checking YAML. A reload that fails
    keeps the policy in force and records why in ``last_error``. Besides the requests
    (``refresh``), a watcher thread in each process (restarted in each forked worker)
    looks every ``check_interval`` seconds: a worker that had no request since an edit
    must not answer its next one under the old policy.
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
        self._confirmed = time.time()  # when the files were last seen as loaded (wall clock)
        self.last_error: PolicyError | None = None
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._reported = self.current.version  # what the last refresh() answered for
        if check_interval > 0:
            self._start_watcher()
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (p := ref()) and p._after_fork())

    def _after_fork(self):
        # The parent's threads do not exist here, and its lock may have been held by one.
        self._lock = threading.Lock()
        self._loading = None
        self._start_watcher()

    def _start_watcher(self):
        ref = weakref.ref(self)
        interval = self.check_interval

        def watch():
            while (policy_file := ref()) is not None:
                policy_file.refresh(report=False)
                del policy_file
                time.sleep(interval / 4)  # an edit is seen within 1.25 intervals

        threading.Thread(target=watch, name="policy-watch", daemon=True).start()

    def _fingerprint(self):
        try:
            return tuple(
                (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in policy_files(self.path)
            )
        except OSError:
            return None

    def refresh(self, report: bool = True) -> bool:
        """Start a reload if the files changed; True when the policy in force changed
        since the last call that reported (``report``)."""
        with self._lock:
            self._start_reload_if_changed()
            if not report:
                return False
            changed = self.current.version != self._reported
            self._reported = self.current.version
            return changed

    def _start_reload_if_changed(self) -> None:
        now = self._clock()
        if self._loading is not None or now - self._checked < self.check_interval:
            return
        self._checked = now
        stamp = self._fingerprint()
        if stamp == self._stamp:
            self._confirmed = time.time()
            return
        self._stamp = stamp
        self._loading = threading.Thread(target=self._reload, name="policy-reload", daemon=True)
        self._loading.start()

    def confirmed_this_second(self, policy) -> bool:
        """Whether ``policy`` is in force and its files were seen unchanged during the
        current second of the wall clock, looking now if they were not (a few stat
        calls, at most once a second): what lets nginx cache an answer to the end of
        this second (app/web/forward_auth.py ``cache_for``). False during a reload.
        """
        now = time.time()
        if policy is not self.current or self._loading is not None:
            return False
        if int(self._confirmed) == int(now):
            return True
        with self._lock:
            if self._loading is not None or policy is not self.current:
                return False
            if self._fingerprint() != self._stamp:
                self._checked = float("-inf")  # changed: reload at once
                self._start_reload_if_changed()
                return False
            self._confirmed = now
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a reload in progress; True when the policy changed (tests, the CLI)."""
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
            # Swapped in here, not at the next request: a worker without requests stays
            # current too (refresh() then reports the change to the first one).
            self.last_error, self.current, self._loading = None, loaded, None
        logger.info("policy reloaded: version %s", loaded.version)
        self.on_load(True, loaded.version)
