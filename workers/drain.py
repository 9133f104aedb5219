"""Draining an owned tenant's mailbox: its commands run one at a time, in order.

A tenant has at most one drain at a time; a kick that arrives meanwhile makes
the running drain go round once more. Drains run on a small thread pool, so
tenants never wait on each other; only a Celery kick's first step for a tenant
it has just claimed runs on the kick's own thread (``run_first``). The first
step of a new owner's drain is its take-over (``TenantSession.on_claimed``), so
it always precedes the commands that were waiting.

A send that pacing puts off (``SendPaced``) stays in flight and its drain ends,
giving the thread back; the drain runs again when the send is due (``run_at``,
on one timer thread), so paced tenants never hold the pool from the others.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import redis

from shared import keys
from shared.clock import Clock
from shared.errors import WapairError
from shared.lease import LeaseKeeper
from shared.state import Command, SessionStore, StateSnapshot, Taken, TakeOver
from workers.recovery import RecoveryCache
from workers.session.messaging import SendPaced
from workers.session.take_over import TakeOverPlan, take_over_plan
from workers.session.tenant_session import TenantSession

log = logging.getLogger(__name__)

#: The timer thread looks again at least this often (a clock moved by hand in tests).
TIMER_MAX_WAIT_S = 1.0


@dataclass
class _DrainState:
    running: bool = False
    again: bool = False


class Ran(Enum):
    """How running one command went."""

    DONE = "done"  # ran to its end under a valid lease: ack it
    CUT_SHORT = "cut_short"  # Redis away or fenced meanwhile: it stays in flight
    DEFERRED = "deferred"  # a send that cannot run now; it stays in flight
    PACED = "paced"  # a send not due yet; it stays in flight and runs again when due


class Drains:
    """The drains of one worker's owned tenants (``SessionHost.sessions``)."""

    def __init__(
        self,
        *,
        sessions: dict[str, TenantSession],
        lock: threading.Lock,
        client: redis.Redis,
        store: SessionStore,
        leases: LeaseKeeper,
        recovery: RecoveryCache,
        stopping: threading.Event,
        fence: Callable[[str, str], None],
        max_threads: int,
        clock: Clock,
    ) -> None:
        self._sessions = sessions  # the host's, guarded by the host's lock
        self._lock = lock
        self._redis = client
        self._store = store
        self._leases = leases
        self._recovery = recovery
        self._stopping = stopping
        self._fence = fence
        self._states: dict[str, _DrainState] = {}
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="wa-cmd")
        self._clock = clock
        self._timer = threading.Condition(threading.Lock())
        self._due: list[tuple[float, str]] = []  # (monotonic, tenant), a heap
        threading.Thread(target=self._run_timer, daemon=True, name="wa-paced").start()

    def idle(self) -> bool:
        """True when no drain runs or waits to run."""
        with self._lock:
            return not self._states

    def shutdown(self) -> None:
        """Run nothing more (a drain already running finishes its command)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._timer:
            self._timer.notify()  # the timer thread sees ``stopping`` and ends

    def run_at(self, tenant: str, at: float) -> None:
        """Drain ``tenant`` again at monotonic time ``at`` (a paced send is due)."""
        with self._timer:
            heapq.heappush(self._due, (at, tenant))
            self._timer.notify()

    def run_due(self) -> int:
        """Schedule the drains that are due now; how many (the timer thread calls it,
        tests with a hand-moved clock too)."""
        now, due = self._clock.monotonic(), []
        with self._timer:
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[1])
        for tenant in dict.fromkeys(due):
            self.schedule(tenant)
        return len(due)

    def _run_timer(self) -> None:
        while not self._stopping.is_set():
            self.run_due()
            with self._timer:
                wait = TIMER_MAX_WAIT_S
                if self._due:
                    wait = min(wait, self._due[0][0] - self._clock.monotonic())
                if wait > 0 and not self._stopping.is_set():
                    self._timer.wait(wait)

    def schedule(self, tenant: str) -> None:
        """Run the tenant's waiting commands soon, never two drains of one tenant at once."""
        with self._lock:
            state = self._states.setdefault(tenant, _DrainState())
            if state.running:
                state.again = True
                return
            state.running = True
        try:
            self._executor.submit(self._loop, tenant)
        except RuntimeError:  # executor shut down
            with self._lock:
                state.running = False

    def _loop(self, tenant: str) -> None:
        while True:
            try:
                self._once(tenant)
            except Exception:
                log.exception("tenant %s: draining commands failed", tenant)
            with self._lock:
                state = self._states[tenant]
                if state.again:
                    state.again = False
                    continue
                state.running = False
                del self._states[tenant]
                return

    def run_first(self, tenant: str, seen: TakeOver) -> None:
        """The take-over and first command of a tenant just claimed, on this thread
        (see ``SessionHost.kick``), from what the grant's round trip read (``seen``);
        skipped if a drain already runs, as it then will. ``schedule`` runs the rest."""
        with self._lock:
            state = self._states.setdefault(tenant, _DrainState())
            if state.running:
                return
            state.running = True
        try:
            self._once(tenant, seen)
        except Exception:
            log.exception("tenant %s: draining commands failed", tenant)
        finally:
            with self._lock:
                state.running = False
                if not state.again:
                    del self._states[tenant]

    def _once(self, tenant: str, first: TakeOver | None = None) -> None:
        """Take the tenant over if not done yet, then run its commands in order; with
        ``first`` (see ``run_first``) only the take-over and one command."""
        with self._lock:
            session = self._sessions.get(tenant)
        if session is None:
            return
        value, first_only = session.lease.value, first is not None
        taken: Taken | None = None
        if not session.taken_over:
            went_on, taken = self._take_over(tenant, session, first)
            if not went_on:
                return
        done: Command | None = None  # run last, not acked yet: the next take acks it
        while not session.fenced and not self._stopping.is_set():
            taken = taken or self._store.take_command(tenant, value, done)
            command, state, taken, done = taken.command, taken.state, None, None
            if command is None:
                break
            ran, command = self._run_or_go_ahead(tenant, session, value, command, state)
            if ran is not Ran.DONE:
                return
            done = command
            if first_only:
                break
        self._finish(tenant, session, value, done, first_only)

    def _finish(self, tenant: str, session: TenantSession, value: str, done: Command | None,
                first_only: bool) -> None:
        """The end of a drain: ack ``done`` if no take followed it (fenced, stopping,
        or first only), then release the lease if the session wants it no more."""
        if done is not None:
            self._store.ack_command(tenant, value, done)
            if first_only:
                return
        if not session.fenced and not self._stopping.is_set() and not session.wants_session():
            self._release(tenant, session)

    def _run_or_go_ahead(self, tenant: str, session: TenantSession, value: str,
                         command: Command, state: StateSnapshot) -> tuple[Ran, Command]:
        """Run ``command``; if it is a send that cannot run now (a ban, no connection
        yet), run the oldest reset or logout queued behind it instead, so that neither
        waits for as long as the send does (the send stays in flight and runs again
        after it). Returns how the command run went, and which one it was."""
        ran = self._run(tenant, session, command, state)
        if ran is not Ran.DEFERRED:
            return ran, command
        try:
            ahead = self._store.take_ahead(tenant, value)
        except WapairError:
            ahead = None  # Redis away: the next mailbox check tries again
        if ahead is None:
            return ran, command
        log.info("tenant %s: command %s (%s) goes ahead of a send that waits", tenant,
                 ahead.id, ahead.kind)
        return self._run(tenant, session, ahead, None), ahead

    def _run(self, tenant: str, session: TenantSession, command: Command,
             state: StateSnapshot | None) -> Ran:
        """Run one command: DONE if it ran to its end under a valid lease (ack it)."""
        value = session.lease.value
        # A command is acked only once it has run under a valid lease. Cut short
        # by Redis going away, or with its writes refused because the session was
        # fenced meanwhile, it stays in flight: this owner's next mailbox check (or
        # the next owner) runs it again; every command is safe to run twice. (Acked
        # regardless, a pair cut short this way left its pairing 'queued' for good.)
        try:
            session.run_command(command, state)
        except WapairError as e:
            if isinstance(e, SendPaced) and not session.fenced:
                self.run_at(tenant, e.at)
                return Ran.PACED
            # A send waiting for its connection (or a ban's expiry) is expected; it
            # recurs at every mailbox check while it waits.
            deferred = e.code == "send_deferred"
            log.log(logging.INFO if deferred else logging.WARNING,
                    "tenant %s: command %s cut short (%s); it runs again", tenant, command.id, e)
            return Ran.DEFERRED if deferred and not session.fenced else Ran.CUT_SHORT
        except Exception:
            self._store.ack_command(tenant, value, command)  # a bug: do not run it forever
            raise
        return Ran.CUT_SHORT if session.fenced else Ran.DONE

    def _take_over(self, tenant: str, session: TenantSession,
                   first: TakeOver | None) -> tuple[bool, Taken | None]:
        """The take-over, its plan computed once: (False, None) if the drain stops here,
        else (True, the command taken with it if the take-over changed nothing)."""
        try:
            seen = first or self._store.take_over(tenant, session.lease.value)
            self._recovery.keep(tenant, seen.record, seen.state[0])
            plan = take_over_plan(seen.state)
            if first is not None and plan.waits:
                return False, None  # a resume waits up to a TTL: the pool's drain takes over
            session.on_claimed(seen.state, plan)
        except WapairError:
            # Let the lease lapse; the claim scan tries again after the TTL.
            self._fence(tenant, "taking over failed")
            return False, None
        # A take-over that changed nothing leaves the command taken with it standing.
        return True, seen.taken if plan is TakeOverPlan.NOTHING else None

    def _release(self, tenant: str, session: TenantSession) -> None:
        self._redis.srem(keys.ACTIVE, tenant)
        result = self._leases.release(tenant)
        if result == -1:  # mail arrived meanwhile: keep the lease and run it
            self._redis.sadd(keys.ACTIVE, tenant)
            self.schedule(tenant)
            return
        with self._lock:
            if self._sessions.get(tenant) is session:
                del self._sessions[tenant]
        self._recovery.drop(tenant)
        log.info("tenant %s: released", tenant)
