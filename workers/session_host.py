"""The SessionHost: everything one worker process owns, and the loop that keeps it safe.

One maintenance thread per worker renews every lease in one pipelined round
trip, self-fences tenants whose lease could be gone, expires pairings and
scans for tenants that need an owner. Commands for an owned tenant are run one
at a time, in mailbox order, by its drain (``workers.drain``); tenants never
wait on each other.

Over 300 lines: renewal, self-fencing, deadlines, the heartbeat and the claim scan
are one maintenance thread's schedule, and each step reads what the others keep.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import redis

from shared import keys
from shared.clock import Clock, SystemClock
from shared.config import Settings
from shared.errors import WapairError
from shared.lease import HEARTBEAT_INTERVAL_S
from shared.whatsapp.port import WhatsAppBackend, WhatsAppSession
from workers.cleanup import CleanupReport, sweep
from workers.drain import Drains
from workers.session.observers import OwnerMetrics, OwnerObserver
from workers.session.parts import SessionParts, session_parts
from workers.session.tenant_session import TenantSession

log = logging.getLogger(__name__)

KickSender = Callable[[str, "str | None", int], None]
MAX_KICK_HOPS = 2
TICK_S = 0.2
# At most this many tenants per claim scan, so several workers share a wave of
# orphans. A scan that fills its batch runs again at once, not after
# CLAIM_INTERVAL_S, while the worker holds less than its fair share (active
# tenants / workers with a fresh heartbeat), or while nobody else takes any of
# the wave: a killed worker's heartbeat stays fresh for WORKER_FRESH_S, so the
# share alone would hold a lone survivor to half of the wave per interval
# (figures: docs/performance.md, "Failover").
CLAIM_BATCH = 200
# The scan wakes this long after the earliest moment a lease it saw held
# elsewhere can lapse, instead of waiting for its next interval (up to
# 1.5 x CLAIM_INTERVAL_S on top of the TTL in a failover).
LAPSE_SLACK_S = 0.005
MIN_PAUSE_S = 0.002
WORKER_FRESH_S = 10.0  # as /health counts live workers
# Drains that run at once (threads, created as needed). A send waits on Redis and on
# its host most of its time, so more drains overlap more of it: at 1,000 tenants
# with pacing off, 48 gave 1,107 messages/s against 16's 1,010 (medians of 4
# alternating runs; docs/performance.md). Each running drain keeps a connection.
DRAIN_THREADS = 48


def recheck_after_s(pttl_ms: int, lease_ttl_s: float) -> float:
    """How long the claim scan leaves a tenant seen held elsewhere alone: until the
    lease's PTTL has run out. A PTTL of 0 lapses now (not "no expiry", which would
    leave the tenant alone for a whole TTL); -1, a lease without expiry, should not
    happen: looked at after a TTL."""
    return pttl_ms / 1000 if pttl_ms >= 0 else lease_ttl_s


class SessionHost:
    """Owns the live sessions of one worker process."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        backend: WhatsAppBackend,
        worker_id: str,
        *,
        send_kick: KickSender,
        clock: Clock | None = None,
        max_threads: int = DRAIN_THREADS,
        parts: SessionParts | None = None,
        observer: OwnerObserver | None = None,
    ) -> None:
        """``parts``: the lease keeper, stores and recovery cache over ``client``, as
        workers/bootstrap.py builds them for a worker (default: the same, with no
        webhook dispatch, for tests and tools); ``observer``: who is told of the
        owned count and of self-fences (default: the Prometheus metrics)."""
        self.worker_id = worker_id
        self.settings = settings
        self._redis = client
        self._backend = backend
        self._send_kick = send_kick
        self.clock = clock or SystemClock()
        self._observer = observer or OwnerMetrics()
        parts = parts or session_parts(client, settings, worker_id, self.clock)
        self.leases = parts.leases
        self.store = parts.store
        self.messages = parts.messages
        self.recovery = parts.recovery
        self.sessions: dict[str, TenantSession] = {}
        # Clients still closing after a self-fence: the tenant is not claimed
        # again by this worker until they are gone (no overlap with ourselves).
        self._closing: dict[str, WhatsAppSession] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.drains = Drains(sessions=self.sessions, lock=self._lock, client=client,
                             store=self.store, leases=self.leases, recovery=self.recovery,
                             stopping=self._stopping, fence=self._fence,
                             max_threads=max_threads, clock=self.clock)
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        now = self.clock.monotonic()
        self._next_renew = now
        self._next_claim = now
        self._next_heartbeat = now
        self._fair_share = 0  # tenants per live worker, as of the last claim scan
        self._orphans_left: int | None = None  # orphans the last scan saw and left
        self._others_claim = False  # the wave shrank by more than this worker took
        self._held_elsewhere: dict[str, float] = {}  # tenant -> monotonic time its lease may end

    # --- lifecycle ------------------------------------------------------
    def register(self) -> bool:
        """Write this worker's first heartbeat now (False if Redis did not answer)."""
        try:  # back under the id of a worker that left: peers may pass kicks to it again
            self._redis.zrem(keys.LEAVING, self.worker_id)
        except redis.RedisError:
            pass
        return self._heartbeat()

    def _heartbeat(self) -> bool:
        try:
            self.recovery.on_boot_marker(self.leases.heartbeat()[1])
        except (redis.RedisError, WapairError):
            return False
        return True

    def start(self) -> None:
        """Register, then start the maintenance thread."""
        self.register()
        self._thread = threading.Thread(target=self._run, name="wa-maintenance", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="wa-fence", daemon=True)
        self._watchdog.start()
        log.info("session host %s started", self.worker_id)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Warm shutdown: close every session, release its lease, have it claimed elsewhere."""
        self._stopping.set()
        try:  # before the handover's kicks: a peer passing one on must not pick us
            now = self.clock.time()
            pipe = self._redis.pipeline(transaction=False)
            pipe.zadd(keys.LEAVING, {self.worker_id: now})
            pipe.zremrangebyscore(keys.LEAVING, "-inf", now - keys.LEAVING_KEPT_S)
            pipe.execute()
        except redis.RedisError:
            pass
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(timeout_s)
        with self._lock:
            owned = list(self.sessions.items())
            self.sessions.clear()
        handles = [(tenant, session.handover()) for tenant, session in owned]
        for (tenant, handle), (_, session) in zip(handles, owned, strict=True):
            # The clients detached earlier and still closing count too: the lease is
            # handed over only once no client of this worker may hold a socket.
            for client in {id(h): h for h in [handle, *session.closing_clients()]
                           if h is not None}.values():
                if not client.wait_closed(timeout_s):
                    log.error("tenant %s: client still open at shutdown", tenant)
        for tenant, _ in handles:
            try:
                if self.leases.release(tenant, force=True) == 1:
                    self._send_kick(tenant, None, 0)
            except WapairError:
                log.warning("tenant %s: could not hand over; its lease will expire", tenant)
        try:
            self._redis.zrem(keys.WORKERS, self.worker_id)
        except redis.RedisError:
            pass
        self.drains.shutdown()
        log.info("session host %s stopped, %d sessions handed over", self.worker_id, len(owned))

    # --- kicks and claims -------------------------------------------------
    def kick(self, tenant: str, hops: int = 0, *, first_here: bool = False) -> str:
        """Mail is waiting for ``tenant``: drain it if we own it, else claim or forward.

        ``first_here`` (a Celery kick): a tenant claimed now has its take-over and first
        command run on the calling thread, when neither can wait on a client; the rest
        of the drain goes to the pool as usual, since a hand-off to the pool waits for
        Celery's own bookkeeping after the task (the late ack, the task events; its
        cost in pair-to-first-QR: docs/performance.md). Never from
        the maintenance thread, which must not wait on anything but its own round trips.
        """
        if self._stopping.is_set():
            # Handing over: pass the kick on so a live worker claims the tenant.
            if hops < MAX_KICK_HOPS:
                self._send_kick(tenant, None, hops + 1)
            return "stopping"
        with self._lock:
            owned = tenant in self.sessions
        if owned:
            self.drains.schedule(tenant)
            return "owner"
        if not self._closed(tenant):
            return "closing"
        # A Celery kick reads what it takes over in the grant's own round trip.
        reads = self.store.take_over_read(tenant) if first_here else None
        result = self.leases.acquire(tenant, also=reads)
        if result.lease is not None:
            session = TenantSession(
                result.lease, store=self.store, leases=self.leases, backend=self._backend,
                settings=self.settings, clock=self.clock, on_idle=self.drains.schedule,
                on_connected=self.recovery.note_connected, messages=self.messages,
            )
            with self._lock:
                self.sessions[tenant] = session
            if reads is not None:
                self.drains.run_first(tenant, result.also)
            self.drains.schedule(tenant)
            return "claimed"
        if result.in_grace:
            # Claim again as soon as grants may resume, not a claim interval later.
            retry_at = self.clock.monotonic() + result.retry_after_ms / 1000
            self._next_claim = min(self._next_claim, retry_at)
            if result.not_ready and hops < MAX_KICK_HOPS:
                # Only this worker must wait (it has just started: a rolling restart
                # hands tenants to the claims queue, which it consumes already); pass
                # the kick to a peer that heartbeats, straight to its own queue (through
                # the claims queue it came back here, prefetched, as often as not).
                peer = self._peer()
                if peer is not None:
                    self._send_kick(tenant, peer, hops + 1)
                    return "passed"
            return "grace"
        if result.holder and result.holder != self.worker_id and hops < MAX_KICK_HOPS:
            self._send_kick(tenant, result.holder, hops + 1)
            return "forwarded"
        return "held"

    def _peer(self) -> str | None:
        """Another worker whose heartbeat is recent and that is not shutting down (None:
        none, or Redis unreachable)."""
        now = self.clock.time()
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrangebyscore(keys.WORKERS, now - self.leases.heartbeat_max_age_s, "+inf")
            pipe.zrangebyscore(keys.LEAVING, now - keys.LEAVING_KEPT_S, "+inf")
            fresh, leaving = pipe.execute()
        except redis.RedisError:
            return None
        gone = {w.decode() for w in leaving} | {self.worker_id}
        peers = sorted(w.decode() for w in fresh if w.decode() not in gone)
        return random.choice(peers) if peers else None

    def _closed(self, tenant: str) -> bool:
        with self._lock:
            handle = self._closing.get(tenant)
        if handle is None:
            return True
        if handle.wait_closed(0):
            with self._lock:
                self._closing.pop(tenant, None)
            return True
        return False

    def claim_scan(self, limit: int = CLAIM_BATCH) -> int:
        """Claim tenants that want an owner and have none; returns how many were claimed."""
        try:
            active: set[bytes] = self._redis.smembers(keys.ACTIVE)  # type: ignore[assignment]
            members = [m.decode() for m in active]
            now = self.clock.monotonic()
            # A lease seen held elsewhere cannot expire before its PTTL ran out, and a
            # release comes with a kick; so each foreign tenant is checked about once
            # per TTL, not on every scan (at 5,000 tenants that was most of a worker's
            # idle CPU).
            held_until = {t: self._held_elsewhere[t] for t in members
                          if self._held_elsewhere.get(t, 0.0) > now}
            self._held_elsewhere = held_until
            with self._lock:
                candidates = [t for t in members if t not in self.sessions
                              and t not in held_until]
            pipe = self._redis.pipeline(transaction=False)
            pipe.zcount(keys.WORKERS, self.clock.time() - WORKER_FRESH_S, "+inf")
            for tenant in candidates:
                pipe.pttl(keys.lease(tenant))
            live_workers, *ttls = pipe.execute()
        except redis.RedisError:
            log.warning("claim scan skipped: Redis unreachable")
            return 0
        self._fair_share = -(-len(members) // max(1, int(live_workers)))
        orphans, newly_held = [], []
        for tenant, ttl_ms in zip(candidates, ttls, strict=True):
            if ttl_ms == -2:  # no lease
                orphans.append(tenant)
            else:
                held_until[tenant] = now + recheck_after_s(ttl_ms, self.settings.lease_ttl_s)
                newly_held.append(tenant)
        self.recovery.held_elsewhere(newly_held)
        # Another worker takes part of this wave if it shrank by more than we took.
        left = self._orphans_left
        self._others_claim = left is not None and len(orphans) < left
        random.shuffle(orphans)
        claimed = 0
        for tenant in orphans[:limit]:
            try:
                claimed += self.kick(tenant, MAX_KICK_HOPS) == "claimed"
            except WapairError:
                break
        self._orphans_left = len(orphans) - claimed
        return claimed

    def next_lapse(self) -> float | None:
        """The earliest monotonic time a lease seen held elsewhere can have lapsed."""
        return min(self._held_elsewhere.values(), default=None)

    def cleanup(self) -> CleanupReport:
        """Beat's cleanup sweep (any one worker runs it per period)."""
        return sweep(self._redis, self.settings, self.clock)

    # --- maintenance --------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.wait(self._pause()):
            try:
                self.tick()
            except Exception:
                log.exception("maintenance tick failed")

    def _pause(self) -> float:
        """Until the next tick: TICK_S, or less when a claim scan is due sooner."""
        due = self._next_claim - self.clock.monotonic()
        return max(MIN_PAUSE_S, min(TICK_S, due))

    def _watch(self) -> None:
        """Self-fence on time even while a tick waits on a stalled Redis.

        The tick's Redis calls can each take a socket timeout; this thread only
        reads the local clock, so a lease is dropped by ``deadline - margin``
        whatever Redis does.
        """
        while not self._stopping.wait(TICK_S / 2):
            try:
                self.fence_expired()
            except Exception:
                log.exception("self-fence check failed")

    def fence_expired(self) -> None:
        """Drop every tenant whose lease may be gone (no renewal succeeded in time)."""
        for lease in self.leases.expired():
            self._fence(lease.tenant, "no renewal succeeded in time")

    def tick(self) -> None:
        """One maintenance round; tests call it directly with a manual clock."""
        now = self.clock.monotonic()
        heartbeat_due = now >= self._next_heartbeat
        if heartbeat_due:
            # Before the renewals: a renewal needs a recent heartbeat (shared/lease.py).
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
            heartbeat_due = self._heartbeat()
        if now >= self._next_renew:
            self._next_renew = now + self.settings.lease_ttl_s / 3
            for lease in self.leases.renew_all():
                self._fence(lease.tenant, "the lease was taken or lost")
            self._drain_waiting_mail()
        self.fence_expired()
        with self._lock:
            owned = list(self.sessions.values())
        for session in owned:
            try:
                session.retry_unwritten_end()
                session.check_deadline()
                session.resume_after_ban()
            except Exception:  # one tenant's failure must not skip the others' deadlines
                log.exception("tenant %s: a deadline check (pairing, ban) failed", session.tenant)
        self._observer.counted(len(owned), sum(s.mode == "pair" for s in owned),
                               sum(s.mode == "resume" for s in owned))
        if heartbeat_due:
            try:
                self.recovery.refresh_some([s.tenant for s in owned])
            except (redis.RedisError, WapairError):
                pass
        if now >= self._next_claim:
            interval = self.settings.claim_interval_s
            self._next_claim = now + interval * random.uniform(0.5, 1.5)
            if self.claim_scan() >= CLAIM_BATCH and (
                    len(self.sessions) < self._fair_share or not self._others_claim):
                self._next_claim = now
            lapse = self.next_lapse()
            if lapse is not None:
                self._next_claim = min(self._next_claim, lapse + LAPSE_SLACK_S)

    def _drain_waiting_mail(self) -> None:
        """Drain owned tenants whose mail waits without a kick (a kick lost on the way),
        or whose command in flight was cut short."""
        with self._lock:
            owned = list(self.sessions)
        if not owned:
            return
        pipe = self._redis.pipeline(transaction=False)
        for tenant in owned:
            pipe.llen(keys.mailbox(tenant))
            pipe.llen(keys.inflight(tenant))  # a command cut short by a Redis outage
        try:
            waiting = pipe.execute()
        except redis.RedisError:
            return
        for tenant, mail, inflight in zip(owned, waiting[::2], waiting[1::2], strict=True):
            if mail or inflight:
                self.drains.schedule(tenant)

    def _fence(self, tenant: str, why: str) -> None:
        with self._lock:
            session = self.sessions.pop(tenant, None)
        self.leases.forget(tenant)
        self.recovery.fenced(tenant)
        if session is not None:
            log.warning("tenant %s: self-fencing, %s", tenant, why)
            self._observer.self_fenced(tenant, why)
            handle = session.fence()
            if handle is not None:
                with self._lock:
                    self._closing[tenant] = handle
