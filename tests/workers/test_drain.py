"""Drains on their own: real Redis, a real lease and store, and a session that records.

The session stands in for ``TenantSession`` (what a drain asks of it: the
take-over, ``run_command``, ``fenced``, ``wants_session``), so these tests hold
the drain's own rules: the take-over first, commands in mailbox order, one at a
time per tenant, a command cut short stays in flight, the lease goes back when
the tenant wants no session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.errors import StoreUnavailable
from shared.lease import HeldLease, LeaseKeeper
from shared.state import Command, SessionStore, StateSnapshot
from tests.support.ports import wait_for
from workers.drain import Drains
from workers.recovery import RecoveryCache
from workers.session.take_over import TakeOverPlan


class RecordingSession:
    """What a drain needs of a tenant session; records what it was asked to do."""

    def __init__(self, lease: HeldLease) -> None:
        self.lease = lease
        self.tenant = lease.tenant
        self.taken_over = False
        self.fenced = False
        self.wanted = True
        self.steps: list[str] = []  # "take-over", then command kinds in the order run
        self.fail_next: Exception | None = None
        self.hold = threading.Event()
        self.hold.set()
        self._running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def on_claimed(self, state: StateSnapshot | None = None,
                   plan: TakeOverPlan | None = None) -> None:
        self.steps.append("take-over")
        self.taken_over = True

    def run_command(self, command: Command, state: StateSnapshot | None = None) -> None:
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            self.hold.wait(5)
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            self.steps.append(command.kind)
        finally:
            with self._lock:
                self._running -= 1

    def wants_session(self) -> bool:
        return self.wanted


class Rig:
    """One worker's drains over real Redis, with the host's parts they are given."""

    def __init__(self, client: redis.Redis, clock: ManualClock) -> None:
        self.client = client
        self.store = SessionStore(client, clock)
        self.leases = LeaseKeeper(client, "w-drain", 15, clock=clock)
        self.sessions: dict[str, RecordingSession] = {}
        self.fenced: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.drains = Drains(
            sessions=self.sessions,  # type: ignore[arg-type]
            lock=self.lock, client=client, store=self.store, leases=self.leases,
            recovery=RecoveryCache(client, clock, 120), stopping=self.stopping,
            fence=lambda tenant, why: self.fenced.append((tenant, why)), max_threads=4,
            clock=clock)

    def own(self, tenant: str) -> RecordingSession:
        """Take the lease and register a session for it, as ``SessionHost.kick`` does."""
        lease = self.leases.acquire(tenant).lease
        assert lease is not None
        session = RecordingSession(lease)
        with self.lock:
            self.sessions[tenant] = session
        return session

    def queue(self, tenant: str, *kinds: str) -> None:
        for kind in kinds:
            command = Command(f"c_{kind}_{time.monotonic_ns()}", kind, tenant, time.time())
            self.client.rpush(keys.mailbox(tenant), command.to_json())


@pytest.fixture
def rig(booted_redis: redis.Redis) -> Iterator[Rig]:
    r = Rig(booted_redis, ManualClock())
    yield r
    r.stopping.set()
    r.drains.shutdown()


def test_the_take_over_comes_first_then_the_commands_in_mailbox_order(
    rig: Rig, tenant_id: str,
) -> None:
    session = rig.own(tenant_id)
    rig.queue(tenant_id, "reset", "resume", "logout")
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to finish")
    assert session.steps == ["take-over", "reset", "resume", "logout"]
    assert not rig.client.llen(keys.mailbox(tenant_id))
    assert not rig.client.llen(keys.inflight(tenant_id)), "every command run is acked"


def test_kicks_during_a_drain_never_start_a_second_one(rig: Rig, tenant_id: str) -> None:
    session = rig.own(tenant_id)
    session.hold.clear()  # the first command waits until released
    rig.queue(tenant_id, "reset")
    rig.drains.schedule(tenant_id)
    wait_for(lambda: session.steps == ["take-over"], 5, "the take-over")
    for _ in range(5):  # kicks arriving while the command runs
        rig.queue(tenant_id, "resume")
        rig.drains.schedule(tenant_id)
    session.hold.set()
    wait_for(rig.drains.idle, 5, "the drain to finish")
    assert session.steps == ["take-over", "reset", *["resume"] * 5]
    assert session.most_at_once == 1


def test_a_command_cut_short_stays_in_flight_and_runs_again(rig: Rig, tenant_id: str) -> None:
    session = rig.own(tenant_id)
    session.fail_next = StoreUnavailable("Redis went away mid-command", tenant=tenant_id)
    rig.queue(tenant_id, "reset", "resume")
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to stop")
    assert session.steps == ["take-over"]
    assert rig.client.llen(keys.inflight(tenant_id)) == 1, "not acked: it was cut short"
    rig.drains.schedule(tenant_id)  # the owner's mailbox check, a TTL/3 later
    wait_for(rig.drains.idle, 5, "the drain to finish")
    assert session.steps == ["take-over", "reset", "resume"]
    assert not rig.client.llen(keys.inflight(tenant_id))


def test_a_tenant_that_wants_no_session_is_released(rig: Rig, tenant_id: str) -> None:
    session = rig.own(tenant_id)
    rig.client.sadd(keys.ACTIVE, tenant_id)
    session.wanted = False
    rig.queue(tenant_id, "reset")
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to finish")
    assert session.steps == ["take-over", "reset"]
    assert not rig.client.exists(keys.lease(tenant_id))
    assert not rig.client.sismember(keys.ACTIVE, tenant_id)
    assert tenant_id not in rig.sessions


def test_a_tenant_still_wanted_keeps_its_lease(rig: Rig, tenant_id: str) -> None:
    session = rig.own(tenant_id)
    rig.queue(tenant_id, "resume")
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to finish")
    assert session.steps == ["take-over", "resume"]
    assert rig.client.exists(keys.lease(tenant_id))
    assert rig.sessions.get(tenant_id) is session


def test_a_take_over_that_cannot_read_redis_fences_the_tenant(
    rig: Rig, tenant_id: str,
) -> None:
    session = rig.own(tenant_id)
    rig.queue(tenant_id, "reset")

    def unavailable(*_: object, **__: object) -> None:
        raise StoreUnavailable("could not reach Redis", tenant=tenant_id)

    rig.store.take_over = unavailable  # type: ignore[method-assign, assignment]
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to stop")
    assert session.steps == [], "no command runs before the take-over"
    assert rig.fenced == [(tenant_id, "taking over failed")]
    assert rig.client.llen(keys.mailbox(tenant_id)) == 1, "the command waits for the next owner"


def test_a_fenced_session_runs_nothing_more(rig: Rig, tenant_id: str) -> None:
    session = rig.own(tenant_id)
    session.taken_over = True
    session.fenced = True
    rig.queue(tenant_id, "reset")
    rig.drains.schedule(tenant_id)
    wait_for(rig.drains.idle, 5, "the drain to stop")
    assert session.steps == []
    assert rig.client.llen(keys.mailbox(tenant_id)) == 1
