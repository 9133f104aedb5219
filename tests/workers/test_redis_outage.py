"""A real Redis stalls or restarts under a running SessionHost (real time, short TTL)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.errors import StoreUnavailable
from shared.lease import LeaseKeeper
from shared.redis_client import connect_redis
from shared.state import SessionStore
from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from tests.support.redis_proc import RedisProcess
from tests.workers.scripted_backend import ScriptedBackend, ScriptedSession
from workers.session_host import SessionHost

TTL_S = 3.0
JID = "6281:7@s.whatsapp.net"


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    proc = RedisProcess(appendonly=True).start()
    yield proc
    if proc.proc is not None:
        os.kill(proc.proc.pid, signal.SIGCONT)
    proc.cleanup()


@pytest.fixture
def running(server: RedisProcess) -> Iterator[tuple[SessionHost, ScriptedBackend, redis.Redis]]:
    client = redis.Redis.from_url(server.url)
    client.set(keys.BOOT_MARKER, "1")
    settings = load_settings({"redis_url": server.url, "lease_ttl_s": TTL_S,
                              "claim_interval_s": 0.3}, environ={})
    backend = ScriptedBackend()
    host = SessionHost(connect_redis(settings), settings, backend, "w-outage",
                       send_kick=lambda *_: None)
    client.hset(keys.session("t1"), mapping={"state": "connected", "device": JID})
    client.sadd(keys.ACTIVE, "t1")
    host.start()
    first = wait_for(lambda: backend.live("t1"), 5, "the tenant claimed")[0]
    first.emit(EventKind.CONNECTED, jid=JID)
    yield host, backend, client
    host.shutdown(2)
    client.close()


def _reconnected(backend: ScriptedBackend, client: redis.Redis, timeout: float) -> None:
    second = wait_for(lambda: len(backend.sessions) == 2 and backend.live("t1"), timeout,
                      "the tenant resumed again")[0]
    assert second.jid == JID
    second.emit(EventKind.CONNECTED, jid=JID)
    assert client.hget(keys.session("t1"), "state") == b"connected"


def test_a_stalled_redis_makes_the_holder_fence_before_its_lease_could_expire(
    running: tuple[SessionHost, ScriptedBackend, redis.Redis], server: RedisProcess,
) -> None:
    host, backend, client = running
    first = backend.sessions[0]
    assert server.proc is not None
    stalled_at = time.monotonic()
    os.kill(server.proc.pid, signal.SIGSTOP)
    assert first.closed.wait(TTL_S)
    fenced_after = time.monotonic() - stalled_at
    # The last renewal was sent before the stall, so Redis keeps the lease at
    # least TTL after it: closing inside TTL - margin is closing in time.
    assert fenced_after < TTL_S - TTL_S / 5 + 0.3, fenced_after
    os.kill(server.proc.pid, signal.SIGCONT)
    # No operator: the lease lapses on Redis' clock and the claim scan resumes the device.
    _reconnected(backend, client, TTL_S + 3)
    print(f"\nstalled Redis: fenced after {fenced_after:.2f} s (TTL {TTL_S} s)")


def test_a_quick_redis_restart_with_its_aof_disturbs_no_session(
    running: tuple[SessionHost, ScriptedBackend, redis.Redis], server: RedisProcess,
) -> None:
    host, backend, client = running
    # Make what is written so far durable, as everysec would a second later.
    client.config_set("appendfsync", "always")
    client.set("wa:test-probe", "1")
    assert server.proc is not None
    server.proc.kill()  # a crash: only the AOF survives
    server.proc.wait(5)
    server.proc = None
    server.start()
    renewals = host.settings.lease_ttl_s / 3
    wait_for(lambda: host.leases.renew_all() == [] and host.leases.get("t1"), renewals * 2,
             "the holder to renew on the restarted Redis")
    assert backend.live("t1") == backend.sessions, "the session was never closed"
    assert client.hget(keys.session("t1"), "state") == b"connected"
    # Meanwhile no new lease is granted for one TTL: the run_id changed.
    other = LeaseKeeper(client, "w-other", TTL_S).acquire("t2")
    assert other.in_grace


def _tick_until(host: SessionHost, clock: ManualClock, probe: Callable[[], bool], what: str,
                step_s: float = 0.0) -> None:
    """Run maintenance rounds until ``probe`` holds: the first call on a connection that
    Redis closed when it stopped may fail, and the next round retries (as in production)."""
    def round_done() -> bool:
        clock.advance(step_s)
        host.tick()
        return probe()

    wait_for(round_done, 5, what)


def _claimed_connected(client: redis.Redis, backend: ScriptedBackend, host: SessionHost
                       ) -> ScriptedSession:
    """Tenant t1, paired and ownerless, claimed by ``host``: its resumed client, connected."""
    client.hset(keys.session("t1"), mapping={"state": "connected", "device": JID})
    client.sadd(keys.ACTIVE, "t1")
    assert host.kick("t1") == "claimed"
    session = wait_for(lambda: backend.live("t1"), 5, "a resumed session")[0]
    session.emit(EventKind.CONNECTED, jid=JID)
    return session


def _manual_host(server: RedisProcess, worker_id: str, **settings: float
                 ) -> tuple[redis.Redis, ManualClock, ScriptedBackend, SessionHost]:
    """A SessionHost on a manual clock (not started: tests call ``tick``), a 15 s TTL."""
    client = redis.Redis.from_url(server.url)
    client.set(keys.BOOT_MARKER, "1")
    clock = ManualClock(wall=time.time())
    # No loss window: a first grant would otherwise wait for the manual clock to move.
    loaded = load_settings({"redis_url": server.url, "lease_ttl_s": 15,
                            "redis_loss_window_s": 0, **settings}, environ={})
    backend = ScriptedBackend()
    host = SessionHost(connect_redis(loaded), loaded, backend, worker_id, clock=clock,
                       send_kick=lambda *_: None)
    assert host.register()
    return client, clock, backend, host


def test_a_pairing_whose_deadline_passes_during_an_outage_is_expired_once_redis_is_back(
    server: RedisProcess,
) -> None:
    """The owner's expiry write meets a dead Redis: the next tick after it returns ends the
    pairing (it used to be forgotten, leaving the pairing in ``qr`` for good: the owner kept
    the lease, so neither the cleanup sweep nor another worker could end it)."""
    client, clock, backend, host = _manual_host(server, "w-deadline", pairing_timeout_s=5)
    try:
        pairing_id = SessionStore(client, clock).begin_pairing("t1", "qr", 5).command.pairing_id
        assert host.kick("t1") == "claimed"
        session = wait_for(lambda: backend.live("t1"), 5, "a pairing session")[0]
        session.emit(EventKind.QR, code="2@first", expires_in=60, index=0)
        client.close()
        server.stop()  # down when the deadline passes (inside the lease's safe window)
        clock.advance(6)
        host.tick()
        assert session.closed.is_set(), "the pairing client closes at its deadline"
        server.start()  # same port, AOF kept: the pairing is still 'qr'
        client = redis.Redis.from_url(server.url)
        assert client.hget(keys.pairing("t1"), "status") == b"qr"
        _tick_until(host, clock, lambda: client.hget(keys.pairing("t1"), "status") != b"qr",
                    "the pairing expired")
        st = SessionStore(client).status("t1")
        assert st["state"] == "idle", st
        assert st["pairing"]["id"] == pairing_id and st["pairing"]["status"] == "expired"
        assert st["last_error"]["code"] == "pairing_expired"
    finally:
        host.shutdown(1)
        client.close()


def test_a_command_cut_short_by_an_outage_runs_again_once_redis_is_back(
    server: RedisProcess,
) -> None:
    """Redis goes away in the middle of a reset: the reset stays in flight and the owner's
    next mailbox check runs it (it used to wait for a kick that never came, so the tenant
    stayed connected under an accepted reset)."""
    client, clock, backend, host = _manual_host(server, "w-cut")
    try:
        session = _claimed_connected(client, backend, host)
        close = session.close

        def close_during_an_outage() -> None:
            server.stop()  # the reset's next step (reading the session) fails
            close()

        session.close = close_during_an_outage  # type: ignore[method-assign]
        SessionStore(client).enqueue("t1", "reset")
        host.kick("t1")
        wait_for(lambda: session.closed.is_set() and host.drains.idle(), 5, "the reset cut short")
        server.start()  # same port, AOF kept
        assert client.hget(keys.session("t1"), "state") == b"connected"
        assert client.llen(keys.inflight("t1")) == 1, "the reset waits in flight"
        # The next renewal round checks the mailbox (every TTL/3).
        _tick_until(host, clock, lambda: client.hget(keys.session("t1"), "state") == b"idle",
                    "the reset run again", step_s=host.settings.lease_ttl_s / 3)
        # Acked once done (the state is written a moment before the ack).
        wait_for(lambda: client.llen(keys.inflight("t1")) == 0, 5, "the reset acked")
        assert client.llen(keys.mailbox("t1")) == 0
    finally:
        host.shutdown(1)
        client.close()


def test_a_pair_whose_starting_write_meets_an_outage_closes_its_client_and_runs_again(
    server: RedisProcess,
) -> None:
    """The pairing client dials while 'starting' is written; if that write fails, the
    client it opened is closed (nothing of a pairing Redis does not know runs on) and the
    pair command stays in flight for the next mailbox check."""
    client, clock, backend, host = _manual_host(server, "w-starting")
    try:
        SessionStore(client, clock).begin_pairing("t1", "qr", 120)
        open_session = backend.open_session

        def open_during_an_outage(*args: object, **kwargs: object) -> object:
            session = open_session(*args, **kwargs)  # type: ignore[arg-type]
            if len(backend.sessions) == 1:
                server.stop()  # 'starting', written next, fails
            return session

        backend.open_session = open_during_an_outage  # type: ignore[method-assign]
        assert host.kick("t1", first_here=True) == "claimed"
        first = backend.sessions[0]
        assert first.closed.is_set(), "the client of an unwritten 'starting' is closed"
        # Its CLOSED schedules a drain; let that one meet the outage too, or on a busy
        # machine it runs the pair again just after the restart, before the check below.
        wait_for(host.drains.idle, 5, "the drain after the close")
        server.start()  # same port, AOF kept
        assert client.hget(keys.pairing("t1"), "status") == b"queued"
        assert client.llen(keys.inflight("t1")) == 1, "the pair waits in flight"
        _tick_until(host, clock, lambda: len(backend.live("t1")) == 1, "the pair run again",
                    step_s=host.settings.lease_ttl_s / 3)
        wait_for(lambda: client.hget(keys.pairing("t1"), "status") == b"starting", 5,
                 "'starting' written")
        backend.live("t1")[0].emit(EventKind.QR, code="2@again", expires_in=60, index=0)
        assert client.hget(keys.pairing("t1"), "status") == b"qr"
    finally:
        host.shutdown(1)
        client.close()


def test_a_pairing_whose_connected_write_meets_an_outage_still_ends_by_its_deadline(
    server: RedisProcess,
) -> None:
    """``Connected`` arrives while Redis is away, so 'paired' cannot be written: the pairing
    keeps its deadline and ends ``expired`` (it used to drop the deadline first and stay
    ``pair_success`` for good under an owner that kept the lease)."""
    client, clock, backend, host = _manual_host(server, "w-paired", pairing_timeout_s=5)
    try:
        SessionStore(client, clock).begin_pairing("t1", "qr", 5)
        assert host.kick("t1") == "claimed"
        session = wait_for(lambda: backend.live("t1"), 5, "a pairing session")[0]
        session.emit(EventKind.PAIR_SUCCESS, jid=JID)
        server.stop()
        with pytest.raises(StoreUnavailable):
            session.emit(EventKind.CONNECTED, jid=JID)
        server.start()
        assert client.hget(keys.pairing("t1"), "status") == b"pair_success"
        clock.advance(6)
        _tick_until(host, clock,
                    lambda: client.hget(keys.pairing("t1"), "status") != b"pair_success",
                    "the pairing ended")
        assert client.hget(keys.pairing("t1"), "status") == b"expired"
        assert client.hget(keys.session("t1"), "state") == b"idle"
        assert session.closed.is_set()
    finally:
        host.shutdown(1)
        client.close()


def test_a_session_end_that_meets_an_outage_is_written_once_redis_is_back(
    server: RedisProcess,
) -> None:
    """``stream_replaced`` arrives while Redis is away: the session's end is kept and the next
    tick after Redis returns writes it, and the owner then lets the tenant go (it used to be
    lost, leaving the tenant ``connected`` with no client under an owner that kept the lease)."""
    client, clock, backend, host = _manual_host(server, "w-end")
    try:
        session = _claimed_connected(client, backend, host)
        client.close()
        server.stop()
        session.emit(EventKind.STREAM_REPLACED)
        assert session.closed.is_set(), "a replaced client closes at once and for good"
        server.start()  # same port, AOF kept: the state still says connected
        client = redis.Redis.from_url(server.url)
        assert client.hget(keys.session("t1"), "state") == b"connected"
        _tick_until(host, clock, lambda: client.hget(keys.session("t1"), "state") == b"failed",
                    "the session's end written")
        error = json.loads(client.hget(keys.session("t1"), "last_error") or b"{}")
        assert error["code"] == "stream_replaced"
        wait_for(lambda: not client.exists(keys.lease("t1")), 5, "the lease released")
        assert backend.live("t1") == [], "never reconnected after stream_replaced"
    finally:
        host.shutdown(1)
        client.close()
