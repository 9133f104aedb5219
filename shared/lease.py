"""Tenant leases with fencing, batched renewal and self-fencing.

A worker owns a tenant's live session only while it holds the tenant's lease:
``SET NX PX`` through Lua, with a per-tenant fence counter incremented on every
grant. Renewal is one pipelined batch per worker per interval. Each held lease
also has a local deadline on the monotonic clock, started *before* the acquire
or renew was sent; once ``deadline - margin`` passes without a successful
renewal the holder must drop the session itself (self-fencing), which happens
before Redis could grant the lease to anyone else.

A worker's keeper (``loss_window_s`` set) also starts or extends a window only
within ``heartbeat_max_age_s`` of a heartbeat that Redis had confirmed at least
``loss_window_s`` earlier: that heartbeat cannot be among the writes a crash or
failover loses, so after a restart the registry bounds every window
(epoch_prelude.lua; the clock rules are in docs/reliability.md).

The epoch (boot marker, freeze, worker registry) lives in one hash slot; a grant
runs in the tenant's slot, which on a Cluster is another node. So a grant does
not read the epoch: it carries the node identities (``run_id:master_replid2``)
the keeper learnt are settled, and lease_acquire.lua grants only if its own
node's identity is among them; a new one (restart, promotion, a node not seen
yet) is settled through the epoch first. A boot marker read right after each
grant catches a data loss without a restart (docs/reliability.md).

Over 300 lines: the grant, the renewal, the self-fencing deadlines and the epoch
they depend on are one contract; splitting them would split that reasoning.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.client import Pipeline

from shared import keys
from shared.clock import Clock, SystemClock
from shared.codec import lease_owner, text
from shared.errors import StoreUnavailable
from shared.scripts import BatchPart, execute_pipelined, queue_script, scripts_for

#: How often a worker writes its heartbeat (workers/session_host.py).
HEARTBEAT_INTERVAL_S = 2.0
#: Settled node identities a keeper sends with each grant: a Cluster's primaries
#: and a few past ones (a promotion or restart leaves the old identity behind).
MAX_SETTLED = 32
#: What the restart freeze allows for the wall clocks of two Redis hosts (a
#: failover) to disagree, and for a wall clock's slew between two readings.
CLOCK_SKEW_S = 1.0


@dataclass
class HeldLease:
    """What the holder knows about one lease it was granted."""

    tenant: str
    value: str
    fence: int
    deadline: float  # monotonic; the lease may be gone in Redis after this


@dataclass(frozen=True)
class AcquireResult:
    """The outcome of one acquire: granted (with its lease), held by another, or in grace."""

    lease: HeldLease | None
    holder: str | None = None
    retry_after_ms: int = 0
    in_grace: bool = False
    also: Any = None  # ``also.parse`` of its replies (``acquire(also=...)``); None if unsent
    # In grace only because this worker's own registration is not durable yet (it
    # has just started, or is back from an outage): another worker may grant now.
    not_ready: bool = False


class RenewalObserver(Protocol):
    """Who hears how each renewal batch went (a worker passes its metrics)."""

    def renewed(self, seconds: float, lost: int) -> None:
        """A batch answered in ``seconds``; ``lost`` of its leases were not ours any more."""

    def renewal_failed(self) -> None:
        """A whole batch went unanswered (Redis unreachable, or not yet registered)."""


class LeaseKeeper:
    """Acquires, renews and releases the tenant leases of one worker."""

    def __init__(
        self,
        client: redis.Redis,
        owner_id: str,
        ttl_s: float,
        *,
        clock: Clock | None = None,
        margin_s: float | None = None,
        loss_window_s: float | None = None,
        observer: RenewalObserver | None = None,
    ) -> None:
        self._redis = client
        self._observer = observer  # told how each renewal batch went (the metrics)
        self._scripts = scripts_for(client)
        self.owner_id = owner_id
        self.ttl_s = ttl_s
        self.ttl_ms = int(ttl_s * 1000)
        # Self-fence with a fifth of the TTL to spare: covers a renewal round
        # trip and modest clock-rate drift between this host and Redis.
        self.margin_s = ttl_s / 5 if margin_s is None else margin_s
        self.clock = clock or SystemClock()
        self._held: dict[str, HeldLease] = {}
        # No held lease leaves its safe window before this (monotonic): lets
        # expired(), which runs every maintenance tick, skip walking thousands of
        # leases. Deadlines only move later (renewal); a new grant lowers it.
        self._no_expiry_before = float("-inf")
        self._lock = threading.Lock()
        # None: not a worker (tools, tests); such a keeper must not run beside workers
        # in production, since the restart freeze counts only registered workers.
        self.loss_window_s = loss_window_s
        self.heartbeat_max_age_s = (loss_window_s or 0.0) + 2 * HEARTBEAT_INTERVAL_S
        self.slack_ms = int((self.heartbeat_max_age_s + CLOCK_SKEW_S) * 1000)
        self._beats: deque[tuple[float, float]] = deque(maxlen=16)  # (sent, confirmed)
        # The boot marker's value and the node identities settled under it (an
        # ordered set): what each grant proves (lease_acquire.lua).
        self._boot: str | None = None
        self._settled: dict[str, None] = {}
        self._epoch_keys = [keys.BOOT_MARKER, keys.LEASE_GRACE, keys.NODES, keys.WORKERS]

    def heartbeat(self) -> tuple[int, str]:
        """Register this worker (its wall-clock time), after checking the epoch.

        Returns what ``check_epoch`` returns. Only a heartbeat that succeeded lets
        the keeper grant itself windows (``window_open``).
        """
        sent = self.clock.monotonic()
        try:
            identity, freeze, boot = self._scripts.worker_heartbeat(
                keys=self._epoch_keys,
                args=[self.ttl_ms, self.slack_ms, self.owner_id, repr(self.clock.time())])
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to write the heartbeat") from e
        with self._lock:
            self._beats.append((sent, self.clock.monotonic()))
        return self._learn(boot, [(identity, freeze)])

    def _learn(self, boot: Any, frozen: Sequence[tuple[Any, Any]]) -> tuple[int, str]:
        """Remember the boot marker and the node identities settled under it; return
        the first identity's freeze (ms) and the boot marker's value."""
        boot_value = text(boot)
        with self._lock:
            if boot_value != self._boot:
                self._boot = boot_value
                self._settled.clear()  # recorded under a marker that is gone
            for identity, freeze in frozen:
                if int(freeze) == 0:
                    self._settled[text(identity)] = None
            while len(self._settled) > MAX_SETTLED:
                del self._settled[next(iter(self._settled))]
        return int(frozen[0][1]), boot_value

    def window_wait(self, now: float) -> float:
        """Seconds until a window may start at ``now`` (0: now; inf: needs a new heartbeat)."""
        if self.loss_window_s is None:
            return 0.0
        wait = float("inf")
        with self._lock:
            beats = list(self._beats)
        for sent, confirmed in beats:
            if sent >= now - self.heartbeat_max_age_s:
                wait = min(wait, max(0.0, confirmed + self.loss_window_s - now))
        return wait

    def acquire(self, tenant: str, also: BatchPart[Any] | None = None) -> AcquireResult:
        """Try to take the tenant's lease; never blocks waiting for it.

        ``also``: more commands for the same round trip (a new owner's first reads); they
        run whatever the grant's outcome (any that need the lease check it themselves, as
        take_command.lua does), and what ``also.parse`` makes of their replies is
        ``AcquireResult.also``.
        """
        value = f"{self.owner_id}|{secrets.token_hex(8)}"
        with self._lock:
            current = self._held.get(tenant)
            if current is not None:
                value = current.value
        started = self.clock.monotonic()
        wait = self.window_wait(started)
        if wait > 0:
            # Not registered durably yet (a new worker, or one back from an outage):
            # a grant now might be lost with its heartbeat. Retry like a freeze.
            retry_ms = int(wait * 1000) + 1 if wait != float("inf") else 1000
            return AcquireResult(None, retry_after_ms=retry_ms, in_grace=True, not_ready=True)
        try:
            if self._boot is None:
                self.check_epoch()
            reply, boot, more = self._acquire_batch(tenant, value, also)
            if int(reply[0]) == -2:
                # The tenant's node has an identity this keeper has not seen settled
                # (a restart, a promotion, another Cluster node): settle it, then try
                # once more if it may grant now.
                freeze = self.check_epoch([(text(reply[1]), int(reply[2]))], own=False)[0]
                if freeze > 0:
                    return AcquireResult(None, retry_after_ms=freeze, in_grace=True, also=more)
                reply, boot, more = self._acquire_batch(tenant, value, also)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to acquire a lease", tenant=tenant) from e
        status = int(reply[0])
        if status == 1 and text(boot) != self._boot:
            return self._unproven_grant(tenant, value, more)
        if status == 1:
            lease = HeldLease(tenant, value, int(reply[1]), started + self.ttl_s)
            with self._lock:
                self._held[tenant] = lease
                self._no_expiry_before = min(self._no_expiry_before,
                                             lease.deadline - self.margin_s)
            return AcquireResult(lease, also=more)
        if status == -2:  # settled a moment ago and changed again: as a freeze
            return AcquireResult(None, retry_after_ms=1000, in_grace=True, also=more)
        return AcquireResult(None, holder=lease_owner(reply[2]), retry_after_ms=int(reply[1]),
                             also=more)

    def _acquire_batch(self, tenant: str, value: str,
                       also: BatchPart[Any] | None) -> tuple[Any, Any, Any]:
        """One round trip: the grant (on the tenant's node), the boot marker read right
        after it (on the epoch's node), then ``also``; returns the grant's reply, the
        marker, and ``also``'s parse of its own replies (None without ``also``)."""
        script = self._scripts.lease_acquire
        with self._lock:
            settled = list(self._settled)

        def queue(pipe: Pipeline) -> None:
            queue_script(pipe, script, [keys.lease(tenant), keys.fence(tenant)],
                         [value, self.ttl_ms, *settled])
            pipe.get(keys.BOOT_MARKER)
            if also is not None:
                also.queue(pipe, value)

        reply, boot, *more = execute_pipelined(
            self._redis, queue, [script, *(also.scripts if also is not None else ())])
        return reply, boot, also.parse(more) if also is not None else None

    def _unproven_grant(self, tenant: str, value: str, more: Any) -> AcquireResult:
        """A grant made while the boot marker changed (lost data, FLUSHALL): a holder
        whose lease went with the data may still run, so the grant is not used but
        given back, and the epoch is checked again (which starts the freeze)."""
        try:
            freeze = self.check_epoch()[0]
            self._scripts.lease_release(
                keys=[keys.lease(tenant), keys.mailbox(tenant), keys.inflight(tenant)],
                args=[value, "1"])
        except (redis.RedisError, StoreUnavailable):
            freeze = self.ttl_ms  # the lease lapses by itself; unused, it harms no one
        return AcquireResult(None, retry_after_ms=max(freeze, 1), in_grace=True, also=more)

    def renew_all(self) -> list[HeldLease]:
        """Renew every held lease in one round trip; return the ones that are lost."""
        with self._lock:
            held = list(self._held.values())
        if not held:
            return []
        started = self.clock.monotonic()
        if self.window_wait(started) > 0:
            self._renewal_failed()  # as if Redis were away: expired() fences in time
            return []
        try:
            replies = self._renew_batch(held)
        except redis.RedisError:
            # Unknown outcome: keep the old deadlines; expired() fences in time.
            self._renewal_failed()
            return []
        if self._observer is not None:
            self._observer.renewed(self.clock.monotonic() - started, sum(r != 1 for r in replies))
        lost = []
        with self._lock:
            for lease, ok in zip(held, replies, strict=True):
                if self._held.get(lease.tenant) is not lease:
                    continue
                if ok == 1:
                    lease.deadline = started + self.ttl_s
                else:
                    lost.append(self._held.pop(lease.tenant))
        return lost

    def _renewal_failed(self) -> None:
        if self._observer is not None:
            self._observer.renewal_failed()

    def _renew_batch(self, held: list[HeldLease]) -> list[object]:
        """One pipelined EVALSHA per lease: one round trip for the whole batch."""
        script = self._scripts.lease_renew

        def queue(pipe: Pipeline) -> None:
            for lease in held:
                queue_script(pipe, script, [keys.lease(lease.tenant)], [lease.value, self.ttl_ms])

        return execute_pipelined(self._redis, queue, [script])

    def expired(self) -> list[HeldLease]:
        """Forget and return the leases whose local deadline minus the margin has passed."""
        now = self.clock.monotonic()
        with self._lock:
            if now < self._no_expiry_before:
                return []
            gone = [x for x in self._held.values() if now >= x.deadline - self.margin_s]
            for lease in gone:
                del self._held[lease.tenant]
            self._no_expiry_before = min(
                (x.deadline for x in self._held.values()), default=float("inf")) - self.margin_s
        return gone

    def is_valid(self, tenant: str, fence: int | None = None) -> bool:
        """True if the lease is held, inside its safe window, and (if given) has that fence."""
        with self._lock:
            lease = self._held.get(tenant)
        if lease is None or (fence is not None and lease.fence != fence):
            return False
        return self.clock.monotonic() < lease.deadline - self.margin_s

    def safe_left(self, tenant: str, fence: int) -> float:
        """Seconds until the holder must have dropped the session (0 if the lease with
        that fence is not held): what a connection host is told, so it drops the client
        by itself when renewals stop reaching it."""
        with self._lock:
            lease = self._held.get(tenant)
        if lease is None or lease.fence != fence:
            return 0.0
        return max(0.0, lease.deadline - self.margin_s - self.clock.monotonic())

    def get(self, tenant: str) -> HeldLease | None:
        """The held lease of ``tenant``, if any."""
        with self._lock:
            return self._held.get(tenant)

    def release(self, tenant: str, *, force: bool = False) -> int:
        """Give the lease up: 1 released, 0 it was not ours, -1 kept (commands waiting)."""
        with self._lock:
            lease = self._held.get(tenant)
        if lease is None:
            return 0
        try:
            result = int(
                self._scripts.lease_release(
                    keys=[keys.lease(tenant), keys.mailbox(tenant), keys.inflight(tenant)],
                    args=[lease.value, "1" if force else "0"],
                )
            )
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to release a lease", tenant=tenant) from e
        if result != -1:
            with self._lock:
                if self._held.get(tenant) is lease:
                    del self._held[tenant]
        return result

    def check_epoch(self, others: Sequence[tuple[str, int]] = (), *,
                    own: bool = True) -> tuple[int, str]:
        """Check whether Redis restarted or lost its data, and start the grant freeze if so:
        (the freeze left in ms, 0 for none; the boot marker's value).

        Workers call it on their heartbeat, so a freeze runs from the restart rather
        than from the next grant. The marker gets a new value whenever Redis is found
        without it (lost data), and keeps it across restarts that kept the data. ``others``: the
        identities and uptimes of nodes that refused a grant (lease_acquire.lua);
        with ``own=False`` the freeze returned is that of the first of them.
        """
        args: list[Any] = [self.ttl_ms, self.slack_ms]
        for identity, uptime in others:
            args += [identity, uptime]
        try:
            identity, freeze, boot, *theirs = self._scripts.redis_epoch(
                keys=self._epoch_keys, args=args)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to check its epoch") from e
        noted = [(identity, freeze), *zip([o[0] for o in others], theirs, strict=True)]
        result = self._learn(boot, noted)
        return (int(theirs[0]), result[1]) if not own and theirs else result

    def forget(self, tenant: str) -> None:
        """Drop local knowledge of a lease (after self-fencing) without touching Redis."""
        with self._lock:
            self._held.pop(tenant, None)
