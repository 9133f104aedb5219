"""Per-tenant send pacing: bursts from a freshly linked device are what gets accounts banned.

``SEND_RATE_PER_TENANT`` messages per second on average; each gap is the mean gap times
a random factor from 0.5 to 1.5, so a tenant's sends never come at a machine's steady
beat. 0 turns pacing off (benchmarks, tests).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from shared.clock import Clock

JITTER = (0.5, 1.5)


class SendPacer:
    """When a tenant's next send may go; takes its clock, its sleep and its randomness."""

    def __init__(self, rate_per_s: float, clock: Clock, *,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[float, float], float] = random.uniform) -> None:
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._next_at: float | None = None  # monotonic

    def wait(self) -> float:
        """Wait until the next send may go (the first goes at once); the seconds waited."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self._clock.monotonic()
        waited = max(0.0, (self._next_at or now) - now)
        if waited > 0:
            self._sleep(waited)  # on the tenant's drain, holding no lock
        gap = self._jitter(*JITTER) / self.rate_per_s
        self._next_at = max(now, self._next_at or now) + gap
        return waited
