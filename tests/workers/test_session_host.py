"""SessionHost and TenantSession against real Redis, a manual clock and a scripted client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.state import SessionStore
from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from tests.workers.scripted_backend import ScriptedBackend, ScriptedSession
from workers.session_host import SessionHost, recheck_after_s

TIMEOUT_S = 30.0


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kicks() -> list[tuple[str, str | None, int]]:
    return []


@pytest.fixture
def host(
    booted_redis: redis.Redis, redis_url: str, backend: ScriptedBackend, clock: ManualClock,
    kicks: list[tuple[str, str | None, int]],
) -> Iterator[SessionHost]:
    # No loss window: the manual clock would have to move for every first grant.
    settings = load_settings({"redis_url": redis_url, "lease_ttl_s": 15,
                              "pairing_timeout_s": TIMEOUT_S, "redis_loss_window_s": 0},
                             environ={})
    client = redis.Redis.from_url(redis_url)
    h = SessionHost(client, settings, backend, "w-test", clock=clock,
                    send_kick=lambda t, o, n: kicks.append((t, o, n)))
    assert h.register()
    yield h
    h.shutdown(1)
    client.close()


def start_pairing(client: redis.Redis, clock: ManualClock, tenant: str) -> str:
    return SessionStore(client, clock).begin_pairing(tenant, "qr", TIMEOUT_S).command.pairing_id


def status(client: redis.Redis, tenant: str) -> dict:
    return SessionStore(client).status(tenant)


def waiting_commands(client: redis.Redis, tenant: str) -> int:
    """Commands not run yet: in the mailbox, or taken (by a take-over's read) and not run."""
    return client.llen(keys.mailbox(tenant)) + client.llen(keys.inflight(tenant))


def owned_pairing(host: SessionHost, client: redis.Redis, backend: ScriptedBackend,
                  clock: ManualClock, tenant: str) -> ScriptedSession:
    """Accept a pairing, let ``host`` claim it, and return the pairing client it opened."""
    start_pairing(client, clock, tenant)
    host.kick(tenant)
    return wait_for(lambda: backend.live(tenant), 5, "a pairing session")[0]


def owned_connected(host: SessionHost, client: redis.Redis, backend: ScriptedBackend,
                    tenant: str, jid: str = "6281:5@s.whatsapp.net") -> ScriptedSession:
    """A paired tenant with no owner, claimed by ``host``; returns its resumed client,
    connected (commands wait until the take-over's resume has connected)."""
    client.hset(keys.session(tenant), mapping={"state": "connected", "device": jid})
    client.sadd(keys.ACTIVE, tenant)
    host.kick(tenant)
    session = wait_for(lambda: backend.live(tenant), 5, "a resumed session")[0]
    session.emit(EventKind.CONNECTED, jid=jid)
    return session


def test_pairing_runs_to_connected(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    pairing_id = start_pairing(booted_redis, clock, tenant_id)
    assert host.kick(tenant_id) == "claimed"
    session = wait_for(lambda: backend.live(tenant_id), 5, "a pairing session")[0]
    assert session.jid is None, "pairing must open a new device"
    session.emit(EventKind.QR, code="2@first", expires_in=60, index=0)
    qr = json.loads(booted_redis.get(keys.qr(tenant_id)))
    assert qr["code"] == "2@first" and qr["index"] == 0
    assert status(booted_redis, tenant_id)["pairing"]["status"] == "qr"
    session.emit(EventKind.PAIR_SUCCESS, jid="6281:28@s.whatsapp.net")
    assert status(booted_redis, tenant_id)["state"] == "pairing", "done only at Connected"
    session.emit(EventKind.CONNECTED, jid="6281:28@s.whatsapp.net")
    st = status(booted_redis, tenant_id)
    assert st["state"] == "connected" and st["device"] == "6281:28@s.whatsapp.net"
    assert st["pairing"]["id"] == pairing_id and st["pairing"]["status"] == "paired"
    assert st["owner"] == "w-test" and booted_redis.get(keys.qr(tenant_id)) is None
    clock.advance(TIMEOUT_S + 1)
    host.tick()
    assert status(booted_redis, tenant_id)["state"] == "connected", "no expiry once paired"
    assert backend.live(tenant_id) == [session]


def test_pairing_timeout_expires_and_releases_the_lease(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    clock.advance(TIMEOUT_S - 1)
    host.tick()
    assert not session.closed.is_set()
    clock.advance(2)
    host.tick()
    assert session.closed.is_set()
    st = status(booted_redis, tenant_id)
    assert st["state"] == "idle" and st["pairing"]["status"] == "expired"
    assert st["last_error"]["code"] == "pairing_expired"
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease release")
    assert not booted_redis.sismember(keys.ACTIVE, tenant_id)
    start_pairing(booted_redis, clock, tenant_id)  # a new pairing is accepted


def test_dial_failure_ends_failed_and_releases(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    session.emit(EventKind.CONNECT_FAILURE, reason="dial", message="connection refused")
    session.close()
    st = status(booted_redis, tenant_id)
    assert st["state"] == "failed" and st["last_error"]["code"] == "upstream_unreachable"
    assert st["pairing"]["status"] == "failed"
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease release")


def test_events_after_a_newer_grant_change_nothing(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    booted_redis.incr(keys.fence(tenant_id))  # someone else was granted the lease since
    before = booted_redis.hgetall(keys.session(tenant_id))
    session.emit(EventKind.CONNECTED, jid="6281:1@s.whatsapp.net")
    assert booted_redis.hgetall(keys.session(tenant_id)) == before
    assert session.closed.is_set(), "the stale owner drops its client"


def test_lost_lease_self_fences_on_the_next_renewal(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    booted_redis.delete(keys.lease(tenant_id))  # e.g. Redis lost it
    fence = host.sessions[tenant_id].lease.fence
    clock.advance(6)
    host.tick()
    assert session.closed.is_set()
    # the claim scan may take the tenant again, but only under a new grant
    again = host.sessions.get(tenant_id)
    assert again is None or again.lease.fence > fence


def test_reset_closes_and_returns_to_idle_in_order(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    store = SessionStore(booted_redis, clock)
    start_pairing(booted_redis, clock, tenant_id)
    store.enqueue(tenant_id, "reset")
    host.kick(tenant_id)
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease release")
    assert [s.closed.is_set() for s in backend.sessions if s.tenant == tenant_id] == [True]
    st = status(booted_redis, tenant_id)
    assert st["state"] == "idle" and st["pairing"]["status"] == "cancelled"


def test_the_lease_outlives_a_closing_client_until_its_closed_comes(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """Released on the close's order alone, the lease could go to another worker whose
    new client overlaps the old one's socket (WhatsApp then removes the device)."""
    # Orphans earlier tests left would be claimed by the tick below, and a resume
    # of theirs keeps its drain busy for a TTL: the wait for idle drains timed out.
    booted_redis.delete(keys.ACTIVE)
    backend.defer_close = True
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    clock.advance(TIMEOUT_S + 1)
    host.tick()  # the pairing expires: its client is told to close
    assert status(booted_redis, tenant_id)["pairing"]["status"] == "expired"
    wait_for(host.drains.idle, 5, "the drain to finish")
    assert session.close_asked and not session.closed.is_set()
    assert booted_redis.exists(keys.lease(tenant_id)), "released while the client may be up"

    session.finish_close()
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "release after CLOSED")
    assert not booted_redis.sismember(keys.ACTIVE, tenant_id)


def test_a_logout_keeps_the_lease_until_the_unlinked_client_has_closed(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The logout waits this long for the CLOSED that only finish_close() sends.
    monkeypatch.setattr("workers.session.core.CLOSE_WAIT_S", 0.5)
    backend.defer_close = True
    session = owned_connected(host, booted_redis, backend, tenant_id)
    wait_for(lambda: status(booted_redis, tenant_id)["state"] == "connected", 5, "connected")
    SessionStore(booted_redis, clock).enqueue(tenant_id, "logout")
    host.kick(tenant_id)
    wait_for(lambda: status(booted_redis, tenant_id)["state"] == "idle", 15, "the logout")
    wait_for(host.drains.idle, 15, "the drain to finish")
    assert session.logged_out and not session.closed.is_set()
    assert booted_redis.exists(keys.lease(tenant_id))

    session.finish_close()
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "release after CLOSED")


def test_a_connected_tenant_without_owner_is_claimed_and_resumed_with_its_jid(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
) -> None:
    booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                         "device": "6281:5@s.whatsapp.net"})
    booted_redis.sadd(keys.ACTIVE, tenant_id)
    assert host.claim_scan() >= 1
    session = wait_for(lambda: backend.live(tenant_id), 5, "a resumed session")[0]
    assert session.jid == "6281:5@s.whatsapp.net"
    assert status(booted_redis, tenant_id)["state"] == "reconnecting"
    session.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    assert status(booted_redis, tenant_id)["state"] == "connected"


def test_a_celery_kick_runs_a_new_claims_first_command_on_its_own_thread(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """No hand-off to the pool before the first QR: that hand-off waited for Celery's
    bookkeeping after the kick task (docs/performance.md, pair to first QR)."""
    start_pairing(booted_redis, clock, tenant_id)
    assert host.kick(tenant_id, first_here=True) == "claimed"
    # Already done when kick returns: opened here, 'starting' written, the command acked.
    [session] = backend.live(tenant_id)
    assert session.opened_on == threading.current_thread().name
    assert status(booted_redis, tenant_id)["pairing"]["status"] == "starting"
    assert booted_redis.llen(keys.inflight(tenant_id)) == 0
    session.emit(EventKind.QR, code="2@first", expires_in=60, index=0)
    assert status(booted_redis, tenant_id)["pairing"]["status"] == "qr"
    # The rest of the drain ran on the pool and kept the lease for the live client.
    wait_for(host.drains.idle, 5, "the pool's drain")
    assert booted_redis.exists(keys.lease(tenant_id)) and host.sessions[tenant_id]


def test_a_kick_for_a_tenant_owned_elsewhere_is_forwarded(
    host: SessionHost, booted_redis: redis.Redis, kicks: list, tenant_id: str
) -> None:
    booted_redis.set(keys.lease(tenant_id), "w-other|abc", px=15000)
    assert host.kick(tenant_id) == "forwarded"
    assert kicks == [(tenant_id, "w-other", 1)]
    assert host.kick(tenant_id, hops=2) == "held"


def test_a_worker_not_yet_registered_durably_passes_a_kick_on(
    booted_redis: redis.Redis, redis_url: str, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """A rolling restart hands tenants to the claims queue, which a worker started a
    moment ago consumes too; it may not grant for its loss window, so it passes the kick
    to one that may, rather than keep the tenant waiting (3.1 s handovers in chaos)."""
    sent: list[tuple[str, str | None, int]] = []
    settings = load_settings({"redis_url": redis_url, "lease_ttl_s": 15,
                              "redis_loss_window_s": 2}, environ={})
    client = redis.Redis.from_url(redis_url)
    fresh = SessionHost(client, settings, backend, "w-fresh", clock=clock,
                        send_kick=lambda t, o, n: sent.append((t, o, n)))
    try:
        assert fresh.register()
        booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                          "device": "6281:5@s.whatsapp.net"})
        booted_redis.zadd(keys.WORKERS, {"w-dead": clock.time() - 60})
        assert fresh.kick(tenant_id) == "grace"
        assert sent == [], "no peer heartbeats: it waits (the claims queue would bring it back)"
        booted_redis.zadd(keys.WORKERS, {"w-peer": clock.time(), "w-leaving": clock.time()})
        booted_redis.zadd(keys.LEAVING, {"w-leaving": clock.time()})  # in a warm shutdown
        assert fresh.kick(tenant_id, hops=1) == "passed"
        assert sent == [(tenant_id, "w-peer", 2)], "straight to a peer that heartbeats"
        assert fresh.kick(tenant_id, hops=2) == "grace", "no hops left: it waits its window"
        booted_redis.zrem(keys.WORKERS, "w-peer", "w-dead", "w-leaving")
        booted_redis.zrem(keys.LEAVING, "w-leaving")
        assert not booted_redis.exists(keys.lease(tenant_id))
        clock.advance(2.01)
        assert fresh.kick(tenant_id, hops=2) == "claimed", "and claims once it may"
    finally:
        fresh.shutdown(1)
        client.close()


def test_warm_shutdown_hands_sessions_over(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, kicks: list,
    tenant_id: str,
) -> None:
    session = owned_connected(host, booted_redis, backend, tenant_id)
    session.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    host.shutdown(1)
    assert session.closed.is_set()
    assert not booted_redis.exists(keys.lease(tenant_id))
    assert (tenant_id, None, 0) in kicks
    assert booted_redis.zscore(keys.LEAVING, "w-test") is not None, "peers pass it no kicks"
    assert host.register() and booted_redis.zscore(keys.LEAVING, "w-test") is None, (
        "until a worker of that id is back")
    assert status(booted_redis, tenant_id)["state"] == "reconnecting"


def test_mail_that_arrives_without_a_kick_is_drained_on_the_next_round(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    session = owned_connected(host, booted_redis, backend, tenant_id)
    SessionStore(booted_redis, clock).enqueue(tenant_id, "reset")  # no kick sent
    clock.advance(6)
    host.tick()
    wait_for(lambda: session.closed.is_set(), 5, "the reset to run")
    assert status(booted_redis, tenant_id)["state"] == "idle"


@pytest.mark.parametrize("first_here", [False, True], ids=["scan", "celery-kick"])
def test_take_over_runs_before_commands_that_were_already_waiting(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str, first_here: bool,
) -> None:
    """Also from a Celery kick (``first_here``): a take-over's resume waits up to a TTL for
    Connected, so it is left to the pool, never run on the kick's thread."""
    booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                         "device": "6281:5@s.whatsapp.net"})
    SessionStore(booted_redis, clock).enqueue(tenant_id, "reset")
    for _ in range(3):  # several kicks at once, as duplicates would bring
        host.kick(tenant_id, first_here=first_here)
    resumed = wait_for(lambda: backend.live(tenant_id), 5, "the take-over's resume")[0]
    assert resumed.opened_on.startswith("wa-cmd"), resumed.opened_on
    assert waiting_commands(booted_redis, tenant_id) == 1, "the reset waits for the resume"
    assert status(booted_redis, tenant_id)["state"] == "reconnecting"
    # Connected: the server has now ended any older connection of this device (a
    # paused previous owner's), so the reset may run.
    resumed.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease release")
    opened = [s for s in backend.sessions if s.tenant == tenant_id]
    assert len(opened) == 1 and opened[0].closed.is_set()
    assert status(booted_redis, tenant_id)["state"] == "idle"


def test_a_pairing_whose_phone_had_scanned_is_finished_by_the_next_owner(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """Owner lost after PairSuccess: the device exists, so the next owner resumes it (which
    also evicts the old owner's connection if it lingers) and the pairing ends paired."""
    pairing_id = start_pairing(booted_redis, clock, tenant_id)
    booted_redis.hset(keys.pairing(tenant_id), "status", "pair_success")
    booted_redis.hset(keys.session(tenant_id), "device", "6281:8@s.whatsapp.net")
    booted_redis.delete(keys.mailbox(tenant_id))  # the old owner had run the pair command
    host.kick(tenant_id)
    resumed = wait_for(lambda: backend.live(tenant_id), 5, "the resume of the new device")[0]
    assert resumed.jid == "6281:8@s.whatsapp.net"
    resumed.emit(EventKind.CONNECTED, jid="6281:8@s.whatsapp.net")
    st = status(booted_redis, tenant_id)
    assert st["state"] == "connected" and st["pairing"]["id"] == pairing_id
    assert st["pairing"]["status"] == "paired"


def test_duplicate_commands_and_kicks_change_nothing(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """A redelivered kick and the same command twice (a retried publish) open one client."""
    store = SessionStore(booted_redis, clock)
    accepted = store.begin_pairing(tenant_id, "qr", TIMEOUT_S)
    booted_redis.rpush(keys.mailbox(tenant_id), accepted.command.to_json())  # the duplicate
    for _ in range(3):
        host.kick(tenant_id)
    session = wait_for(lambda: backend.live(tenant_id), 5, "the pairing client")[0]
    wait_for(lambda: not booted_redis.llen(keys.mailbox(tenant_id)), 5, "the mailbox drained")
    session.emit(EventKind.PAIR_SUCCESS, jid="6281:9@s.whatsapp.net")
    session.emit(EventKind.CONNECTED, jid="6281:9@s.whatsapp.net")
    store.enqueue(tenant_id, "reset")
    host.kick(tenant_id)
    wait_for(lambda: session.closed.is_set(), 5, "the reset")
    resume = store.enqueue(tenant_id, "resume")
    booted_redis.rpush(keys.mailbox(tenant_id), resume.command.to_json())
    host.kick(tenant_id)
    host.kick(tenant_id)
    resumed = wait_for(lambda: backend.live(tenant_id), 5, "the resumed client")[0]
    resumed.emit(EventKind.CONNECTED, jid="6281:9@s.whatsapp.net")
    wait_for(lambda: not booted_redis.llen(keys.mailbox(tenant_id)), 5, "the mailbox drained")
    opened = [s for s in backend.sessions if s.tenant == tenant_id]
    assert [s.jid for s in opened] == [None, "6281:9@s.whatsapp.net"]
    assert status(booted_redis, tenant_id)["pairing"]["status"] == "paired"


def test_a_command_left_in_flight_by_a_dead_owner_is_rerun_and_its_duplicate_is_harmless(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """Redelivery after a crash: the dead owner's unfinished command is re-run by the next
    owner, and being idempotent it does what it would have done, once."""
    store = SessionStore(booted_redis, clock)
    booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                         "device": "6281:5@s.whatsapp.net"})
    reset = store.enqueue(tenant_id, "reset")
    # The dead owner had taken it (mailbox -> inflight) and died before the ack.
    booted_redis.lmove(keys.mailbox(tenant_id), keys.inflight(tenant_id), "LEFT", "RIGHT")
    booted_redis.rpush(keys.mailbox(tenant_id), reset.command.to_json())  # and a redelivery
    host.kick(tenant_id)
    resumed = wait_for(lambda: backend.live(tenant_id), 5, "the take-over's resume")[0]
    resumed.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease release")
    assert not booted_redis.llen(keys.inflight(tenant_id))
    assert not booted_redis.llen(keys.mailbox(tenant_id))
    assert status(booted_redis, tenant_id)["state"] == "idle"
    assert all(s.closed.is_set() for s in backend.sessions if s.tenant == tenant_id)


@pytest.fixture
def lone_redis() -> Iterator[tuple[redis.Redis, str]]:
    """A Redis of its own (client, url): other tests' tenants and heartbeats would change
    the share."""
    from tests.support.redis_proc import RedisProcess

    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    client.set(keys.BOOT_MARKER, "1")
    try:
        yield client, server.url
    finally:
        client.close()
        server.cleanup()


def _wave(client: redis.Redis, clock: ManualClock, size: int) -> list[str]:
    """``size`` connected tenants with no owner, and a second live worker."""
    ids = [f"wave-{i}" for i in range(size)]
    pipe = client.pipeline(transaction=False)
    for i, tenant in enumerate(ids):
        pipe.hset(keys.session(tenant), mapping={"state": "connected",
                                                  "device": f"62{i}:1@s.whatsapp.net"})
    pipe.sadd(keys.ACTIVE, *ids)
    pipe.zadd(keys.WORKERS, {"w-other": clock.time()})
    pipe.execute()
    return ids


def _lone_host(lone: tuple[redis.Redis, str], backend: ScriptedBackend, clock: ManualClock,
               **settings: float) -> SessionHost:
    client, url = lone
    host = SessionHost(client, load_settings({"redis_url": url, "lease_ttl_s": 15,
                                              "redis_loss_window_s": 0, **settings},
                                             environ={}),
                       backend, "w-test", clock=clock, send_kick=lambda t, o, n: None)
    assert host.register()
    return host


def test_a_wave_of_orphans_is_claimed_batch_after_batch_up_to_the_fair_share(
    lone_redis: tuple[redis.Redis, str], backend: ScriptedBackend, clock: ManualClock,
):
    from workers.session_host import CLAIM_BATCH

    ids = _wave(lone_redis[0], clock, CLAIM_BATCH * 3 + 50)  # a share of 325 with w-other
    host = _lone_host(lone_redis, backend, clock)
    try:
        owned = [len(host.sessions)]
        host.tick()
        owned.append(len(host.sessions))
        # w-other takes 50 of the wave meanwhile: it is claiming too, the share holds.
        taken = [t for t in ids if t not in host.sessions][:50]
        for tenant in taken:
            lone_redis[0].set(keys.lease(tenant), "w-other|token", px=60_000)
        for _ in range(2):  # the clock does not move: only the immediate re-scans claim
            host.tick()
            owned.append(len(host.sessions))
        # a batch, another at once (200 < 325), then the share stops it
        assert owned == [0, CLAIM_BATCH, 2 * CLAIM_BATCH, 2 * CLAIM_BATCH]
        clock.advance(2 * host.settings.claim_interval_s)
        host.tick()  # the regular scan still claims what nobody took
        assert len(host.sessions) == len(ids) - len(taken)
    finally:
        host.shutdown(1)


def test_a_wave_nobody_else_takes_is_claimed_whole_at_once(
    lone_redis: tuple[redis.Redis, str], backend: ScriptedBackend, clock: ManualClock,
):
    """w-other's heartbeat is fresh, but it claims nothing (it was killed a moment ago):
    the survivor does not stop at its share of the wave."""
    from workers.session_host import CLAIM_BATCH

    ids = _wave(lone_redis[0], clock, CLAIM_BATCH * 3 + 50)
    host = _lone_host(lone_redis, backend, clock)
    try:
        owned = []
        for _ in range(4):  # the clock does not move: only the immediate re-scans claim
            host.tick()
            owned.append(len(host.sessions))
        assert owned == [CLAIM_BATCH, 2 * CLAIM_BATCH, 3 * CLAIM_BATCH, len(ids)]
    finally:
        host.shutdown(1)


def test_the_claim_scan_wakes_when_a_lease_held_elsewhere_can_lapse(
    lone_redis: tuple[redis.Redis, str], backend: ScriptedBackend, clock: ManualClock,
):
    """Not at its next interval, which can be far later (here 15 to 45 s)."""
    client = lone_redis[0]
    client.hset(keys.session("lapsing"), mapping={"state": "connected",
                                                      "device": "6281:5@s.whatsapp.net"})
    client.sadd(keys.ACTIVE, "lapsing")
    client.set(keys.lease("lapsing"), "w-other|token", px=10_000)
    host = _lone_host(lone_redis, backend, clock, claim_interval_s=30)
    try:
        host.tick()
        assert "lapsing" not in host.sessions
        client.delete(keys.lease("lapsing"))  # as its expiry will, after the PTTL
        clock.advance(9.9)
        host.tick()
        assert "lapsing" not in host.sessions, "looked before the lease could lapse"
        clock.advance(0.2)
        host.tick()
        assert "lapsing" in host.sessions
    finally:
        host.shutdown(1)


def test_a_tenant_held_elsewhere_is_looked_at_again_only_when_its_lease_can_have_lapsed(
    host: SessionHost, booted_redis: redis.Redis, clock: ManualClock, tenant_id: str,
):
    booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                        "device": "6281:5@s.whatsapp.net"})
    booted_redis.set(keys.lease(tenant_id), "w-other|token", px=60_000)
    booted_redis.sadd(keys.ACTIVE, tenant_id)
    host.claim_scan()
    assert tenant_id not in host.sessions
    # The lease vanishes without a kick (only expiry does that, after its PTTL):
    # the scans trust the PTTL they read and do not look before it has passed.
    booted_redis.delete(keys.lease(tenant_id))
    clock.advance(30)
    host.claim_scan()
    assert tenant_id not in host.sessions
    clock.advance(31)
    assert host.register()  # as the heartbeat of every tick would have
    host.claim_scan(limit=100_000)  # orphans other tests left may be in the batch too
    assert tenant_id in host.sessions


def test_a_lease_read_with_no_time_left_is_looked_at_again_on_the_next_scan() -> None:
    assert recheck_after_s(0, 15) == 0, "PTTL 0: lapsing now, not a lease without expiry"
    assert recheck_after_s(2_500, 15) == 2.5
    assert recheck_after_s(-1, 15) == 15


def test_the_adapter_may_not_dial_once_the_lease_could_be_gone(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """The guard the adapter asks before every dial answers from the local lease deadline,
    without Redis: a process paused between opening a client and its dial stays silent."""
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    assert session.may_connect is not None and session.may_connect()
    clock.advance(host.settings.lease_ttl_s * 0.8 + 0.1)  # past deadline - margin, no renewal
    assert not session.may_connect()


def test_a_logout_during_pairing_cancels_it_without_unlinking(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """A device never linked has nothing to unlink (neonize raises "client is nil"): the
    logout cancels the pairing, deletes the local keys and is not run again."""
    pairing = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    pairing.emit(EventKind.QR, code="q0", expires_in=20, index=0)
    wait_for(lambda: status(booted_redis, tenant_id)["pairing"]["status"] == "qr", 5, "qr")

    SessionStore(booted_redis, clock).enqueue(tenant_id, "logout")
    host.kick(tenant_id)

    st = wait_for(lambda: (s := status(booted_redis, tenant_id))["state"] == "idle" and s, 5,
                  "the logout")
    assert st["pairing"]["status"] == "cancelled"
    assert pairing.closed.is_set() and not pairing.logged_out
    assert backend.deleted_stores == [tenant_id]
    wait_for(lambda: waiting_commands(booted_redis, tenant_id) == 0, 5, "the logout acked")


def test_a_device_paired_but_never_connected_is_resumed(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    """whatsmeow's reconnect after the 515 failed and only logged: no Connected comes."""
    from workers.session.pairing import PAIRED_CONNECT_S

    pairing = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    pairing.emit(EventKind.QR, code="q0", expires_in=20, index=0)
    pairing.emit(EventKind.PAIR_SUCCESS, jid="6281:7@s.whatsapp.net", platform="android",
                 business_name="")
    clock.advance(PAIRED_CONNECT_S - 1)
    host.tick()
    assert not pairing.closed.is_set()

    clock.advance(2)
    host.tick()

    assert pairing.closed.is_set()
    [resumed] = backend.live(tenant_id)
    assert resumed.jid == "6281:7@s.whatsapp.net"
    resumed.emit(EventKind.CONNECTED, jid="6281:7@s.whatsapp.net")
    st = wait_for(lambda: (s := status(booted_redis, tenant_id))["state"] == "connected" and s,
                  5, "connected")
    assert st["pairing"]["status"] == "paired"
