"""Whether a cold check can still be answered in time: the arithmetic of its budget.

Every ``/auth`` is to be answered within ``ORCID_TIMEOUT`` plus one second of the proxy
sending it. A cached answer takes microseconds; a cold one reads ORCID for up to
``ORCID_TIMEOUT``. So a cold decision may start only while a whole ORCID read still fits
in what is left of the check's budget: one that waited in gunicorn's queue (or the
kernel's) too long is refused at once, rather than read and answered late.

NOTE: every time here is on the monotonic clock, taken by the caller (the edge reads the
clock; this module never does).
"""

from __future__ import annotations

from dataclasses import dataclass

# Seconds past ORCID_TIMEOUT a proxy may wait for an answer: the bound of issue 12.
SLACK = 1.0
# Seconds kept back from the read for what follows it: the lock's release, storing the
# decision, the decision log and the answer (each Redis call gives up within 200 ms).
FINISH = 0.3


@dataclass(frozen=True, slots=True)
class Budget:
    """The time one check has: answered by ``answer_by``, a cold read of up to ``orcid_timeout``.

    A check queued longer than ``SLACK - FINISH`` (0.7 s) gets no cold decision.
    """

    answer_by: float
    orcid_timeout: float

    @classmethod
    def from_arrival(cls, arrived: float, orcid_timeout: float) -> Budget:
        """The budget of a check that reached this host at ``arrived``."""
        return cls(arrived + orcid_timeout + SLACK, orcid_timeout)

    @property
    def read_by(self) -> float:
        """When an ORCID read for this check must have ended."""
        return self.answer_by - FINISH

    @property
    def last_start(self) -> float:
        """The latest moment a whole ORCID read can start and its answer still be on time."""
        return self.read_by - self.orcid_timeout

    def admits(self, now: float) -> bool:
        """Whether a cold decision may start now."""
        return now <= self.last_start

    def may_wait(self, now: float, most: float) -> float:
        """Seconds to wait for a cold slot: at most ``most``, never past ``last_start``."""
        return max(0.0, min(most, self.last_start - now))

    def left(self, now: float) -> float:
        """Seconds until ``read_by``: how long to wait for another's read of the same record."""
        return max(0.0, self.read_by - now)


def arrival(started: float, now: float, queued: float | None) -> float:
    """When the check reached this host: the earlier of its WSGI call and the kernel's word.

    ``queued`` is how long ago the request's last byte arrived, as the kernel tells it
    (None when it cannot); the earlier time counts, so a clock step or a coarse reading
    only ever shortens the budget.
    """
    if queued is None:
        return started
    return min(started, now - queued)
