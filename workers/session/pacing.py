"""Per-tenant send pacing: bursts from a freshly linked device are what gets accounts banned.

``SEND_RATE_PER_TENANT`` messages per second on average; each gap is the mean gap times
a random factor from 0.5 to 1.5, so a tenant's sends never come at a machine's steady
beat. 0 turns pacing off (benchmarks, tests).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from shared.clock import Clock

JITTER = (0.5, 1.5)


class SendPacer:
    """When a tenant's next send may go; takes its clock and its randomness.

    It never sleeps: a send that is not due yet is put off (``due_in``) and its
    drain gives its thread back until then (``workers/drain.py``), so a paced
    tenant holds no thread that another tenant's commands could run on.
    """

    def __init__(self, rate_per_s: float, clock: Clock, *,
                 jitter: Callable[[float, float], float] = random.uniform) -> None:
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._jitter = jitter
        self._next_at: float | None = None  # monotonic

    def due_in(self) -> float:
        """Seconds until the next send may go: 0 now (always, the first time)."""
        if self.rate_per_s <= 0 or self._next_at is None:
            return 0.0
        return max(0.0, self._next_at - self._clock.monotonic())

    def sent(self) -> None:
        """A send goes now: the next one may go a jittered gap later (a tenant quiet
        for a while banks no sends for a burst)."""
        if self.rate_per_s <= 0:
            return
        now = self._clock.monotonic()
        self._next_at = max(now, self._next_at or now) + self._jitter(*JITTER) / self.rate_per_s
