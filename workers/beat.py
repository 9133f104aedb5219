"""Beat's scheduler: celery-redbeat's, made to ride out Redis outages.

redbeat takes its lock once, in a ``beat_init`` handler, and extends it at the
top of every tick. A Redis that stalls or restarts breaks both: ``lock.extend``
raising ``redis.exceptions.TimeoutError`` ends beat (rc 1), and a beat still
waiting in ``lock.acquire()`` has the error swallowed by Celery, keeps
``lock = None`` and dies on its first tick (``'NoneType' object has no
attribute 'extend'``).

:class:`OutageProofRedBeatScheduler` moves all of the lock handling into the
tick instead: a beat without the lock tries once (non-blocking) per tick; the
holder extends it and only then sends what is due. A Redis error skips the tick
(nothing is sent without a confirmed lock) and the next tick tries again; a
lock found lost (it expired during a long outage and the other beat took it)
makes this beat a waiting one. So each task is still sent by one beat, once per
period, before, during (not at all) and after an outage.

A beat that starts while Redis is unreachable (an outage, or a Sentinel failover
that has not promoted a replica yet) waits for it: redbeat reads its schedule in
the scheduler's constructor, and an error there would end beat before its first
tick.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import signals
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    acquire_distributed_beat_lock,
    get_redis,
)
from redis.exceptions import LockError

log = logging.getLogger(__name__)

# The lock is taken on the first tick, never in a handler whose errors Celery swallows.
signals.beat_init.disconnect(acquire_distributed_beat_lock)


class OutageProofRedBeatScheduler(RedBeatScheduler):
    """RedBeatScheduler whose lock is (re)acquired and extended on each tick, and whose
    ticks skip, rather than end beat, while Redis is unreachable."""

    lock: Any = None
    _redis_down = False  # set before __init__ ends: setup_schedule may find Redis away
    #: Longest wait between two tries to read the schedule at start-up.
    SETUP_RETRY_MAX_S = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock_valid_until = 0.0  # monotonic; sends stop at this point without an extend

    def setup_schedule(self) -> None:
        """redbeat's, tried again (backing off to SETUP_RETRY_MAX_S) until Redis answers."""
        delay = 0.2
        while True:
            try:
                super().setup_schedule()
            except redis.RedisError as e:
                self._unreachable(e)
                time.sleep(delay)  # beat has nothing else to do until it has a schedule
                delay = min(delay * 2, self.SETUP_RETRY_MAX_S)
                continue
            self._reachable()
            return

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # noqa: A002 - Celery's signature
        """Hold the lock, then send what is due; the seconds until the next tick."""
        if self.lock_key and not self._hold_lock():
            return float(self.max_interval)
        remaining: list[float] = []
        try:
            for entry in self.schedule.values():
                if self.lock_key and time.monotonic() >= self._lock_valid_until:
                    break  # a tick that ran this long may no longer hold the lock
                next_time_to_run = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_time_to_run:
                    remaining.append(next_time_to_run)
        except RuntimeError:
            log.debug("beat: RuntimeError", exc_info=True)
        except redis.RedisError as e:
            self._unreachable(e)
            return float(self.max_interval)
        self._reachable()
        return float(min(remaining + [self.max_interval]))

    def _hold_lock(self) -> bool:
        """True once this beat holds the lock for at least another lock_timeout."""
        started = time.monotonic()
        try:
            if self.lock is None:
                lock = self._new_lock()
                if not lock.acquire(blocking=False):
                    self._reachable()
                    return False
                self.lock = lock
                log.info("beat: Acquired lock")
            else:
                self.lock.extend(int(self.lock_timeout))
        except LockError:
            # LockNotOwnedError: it expired (a long outage) and may be held elsewhere now.
            log.warning("beat: lost the lock %s; waiting to acquire it again", self.lock_key)
            self.lock = None
            return False
        except redis.RedisError as e:
            self._unreachable(e)
            return False
        self._lock_valid_until = started + float(self.lock_timeout) / 2
        self._reachable()
        return True

    def _new_lock(self) -> Any:
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval,
                           thread_local=False)
        # redbeat's extend sets the expiry to lock_timeout (redis-py's would add to it).
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def _unreachable(self, error: Exception) -> None:
        if not self._redis_down:
            log.warning("beat: Redis unreachable (%s); skipping ticks until it answers",
                        type(error).__name__)
        self._redis_down = True

    def _reachable(self) -> None:
        if self._redis_down:
            log.info("beat: Redis answers again")
        self._redis_down = False

    def close(self) -> None:
        """Release the lock if Redis answers; an unreachable one lets it expire."""
        try:
            super().close()
        except redis.RedisError as e:
            log.warning("beat: lock not released (%s); it expires by itself",
                        type(e).__name__)
            self.lock = None
            super().close()  # without a lock: only the base scheduler's close
