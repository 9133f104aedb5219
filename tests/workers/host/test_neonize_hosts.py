"""Real neonize in connection hosts, offline: its Go library replaced by a scripted stand-in
(``tests.support.fake_go``) or, where only the dial matters, the real one dialling a local port.

Everything above the Go functions is real: neonize's Python client and its ctypes
callbacks, our adapter, the host process, the pool, and, for the state tests, the
SessionHost writing to a real Redis.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.config import load_settings
from shared.state import SessionStore
from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from workers.host.pool import HostLimits, HostPool
from workers.session_host import SessionHost

from .conftest import Events, pid_alive

pytestmark = pytest.mark.slow


def neonize_pool(store: Path | str, *, script: str | None = None, proxy: str = "",
                 media_max_bytes: int | None = None, **limits: float) -> HostPool:
    config = {"backend": "neonize", "store": str(store), "proxy": proxy,
              "device_name": "wapair-test", "log_level": "INFO", "log_format": "text"}
    if media_max_bytes is not None:
        config["media_max_bytes"] = str(media_max_bytes)
    command = ((sys.executable, "-m", "tests.support.fake_go", "--script", script)
               if script else (sys.executable, "-m", "workers.host.child"))
    return HostPool("neonize", config, HostLimits(**limits), command=command)  # type: ignore[arg-type]


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A proxy address that accepts connections and never answers (a dial that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_dial_that_hangs_closes_within_3_s_with_nothing_after_closed(
        tmp_path: Path, silent_listener: str) -> None:
    """Real neonize: whatsmeow's Disconnect waits for the dial (60 s); the host is killed."""
    pool = neonize_pool(tmp_path, proxy=silent_listener)
    try:
        events = Events()
        session = pool.open_session("t1", jid=None, on_event=events)
        time.sleep(1.0)  # the dial is under way: the listener never answers
        closed_at = time.monotonic()
        session.close()
        events.wait_for(EventKind.CLOSED, timeout=3)
        assert time.monotonic() - closed_at < 3.0
        time.sleep(0.5)  # observing an absence: no event may follow CLOSED
        assert events.kinds()[-1] is EventKind.CLOSED
        assert events.kinds().count(EventKind.CLOSED) == 1
    finally:
        pool.shutdown()


def test_a_close_during_the_qr_phase_always_ends(tmp_path: Path) -> None:
    """whatsmeow's QR channel is never closed by a local disconnect: neonize's Go loop
    waits for good (the stand-in ignores Disconnect and Stop)."""
    pool = neonize_pool(tmp_path, script="hang")
    try:
        events = Events()
        session = pool.open_session("t1", jid=None, on_event=events)
        events.wait_for(EventKind.QR)
        host = session.host
        assert host is not None
        session.close()
        events.wait_for(EventKind.CLOSED, timeout=3)
        assert not pid_alive(host.pid)
    finally:
        pool.shutdown()


def test_an_abort_drops_only_its_host_and_the_session_comes_back(tmp_path: Path) -> None:
    """Go's fatal error (unlocked maps, a nil device) aborts the host; the owner still
    holds the lease, so the session reopens in a fresh host."""
    pool = neonize_pool(tmp_path, script="abort")
    try:
        events = Events()
        session = pool.open_session("t1", jid=None, on_event=events, lease_left=lambda: 10.0)
        events.wait_for(EventKind.QR)
        first = session.host
        assert first is not None
        assert events.wait_for(EventKind.DISCONNECTED).data["reason"] == "host_lost"
        first.wait_exited(5)
        assert first.exit_code == -6  # SIGABRT
        events.wait_for(EventKind.QR)  # opened again, in another host (which aborts too)
        session.close()
        events.wait_for(EventKind.CLOSED, timeout=5)
    finally:
        pool.shutdown()


def test_descriptors_leaked_per_session_go_back_to_their_baseline(tmp_path: Path) -> None:
    """neonize keeps a store container open per session: an emptied host over its baseline
    is replaced, so 50 open/close cycles leave the hosts as they started."""
    pool = neonize_pool(tmp_path, script="leak")
    try:
        wait_for(lambda: pool.hosts() and pool.hosts()[0].get("fds"), 10, "the first stats")
        baseline = pool.hosts()[0]["fds"]
        for i in range(50):
            events = Events()
            session = pool.open_session(f"t{i % 5}", jid=None, on_event=events)
            events.wait_for(EventKind.QR)
            session.close()
            events.wait_for(EventKind.CLOSED, timeout=5)
        wait_for(lambda: pool.recycled >= 1 and all(
            h["fds"] <= baseline + 16 for h in pool.hosts() if "fds" in h),
            10, "the leaking host replaced, descriptors back to their baseline")
    finally:
        pool.shutdown()


def test_the_phone_lists_our_device_name(tmp_path: Path) -> None:
    """The stand-in writes the DeviceProps name neonize passed to Go into its first QR."""
    pool = neonize_pool(tmp_path, script="hang")
    try:
        events = Events()
        session = pool.open_session("t1", jid=None, on_event=events)
        assert events.wait_for(EventKind.QR).data["code"].split(",")[1] == "wapair-test"
        session.close()
        events.wait_for(EventKind.CLOSED, timeout=3)
    finally:
        pool.shutdown()


# --- what the worker writes, from real neonize events fed into a host -----------------

def run_pairing(redis_url: str, client: redis.Redis, tenant: str, store: Path, script: str,
                until: str) -> dict:  # type: ignore[type-arg]
    """Pair ``tenant`` through a SessionHost whose hosts play ``script``; the status once
    ``until`` (a state) is reached."""
    settings = load_settings({"redis_url": redis_url, "redis_loss_window_s": 0,
                              "pairing_timeout_s": 60,
                              "wa_backend": "neonize"}, environ={})
    pool = neonize_pool(store, script=script)
    host = SessionHost(redis.Redis.from_url(redis_url), settings, pool, "w-neonize",
                       send_kick=lambda *a: None)
    assert host.register()  # the first heartbeat, as start() writes it
    try:
        SessionStore(client).begin_pairing(tenant, "qr", 60)
        assert host.kick(tenant) == "claimed"
        host.start()

        def reached() -> dict | None:  # type: ignore[type-arg]
            st = SessionStore(client).status(tenant)
            return st if st["state"] == until else None

        return wait_for(reached, 15, f"state {until}")
    finally:
        host.shutdown(3)
        pool.shutdown()


@pytest.mark.parametrize(("event", "state", "code", "detail"), [
    ("device_removed", "logged_out", "logged_out", "device_removed"),
    ("stream_replaced", "failed", "stream_replaced", None),
    # Not final any more: the session waits out the ban (reconnecting), its lease kept.
    ("temporary_ban", "reconnecting", "temporary_ban", None),
    ("client_outdated", "failed", "client_outdated", None),
    ("logged_out", "logged_out", "logged_out", None),
    ("connect_failure", "failed", "connect_failure", None),
])
def test_final_events_end_the_connected_session_and_a_ban_pauses_it(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path,
        event: str, state: str, code: str, detail: str | None) -> None:
    st = run_pairing(redis_url, booted_redis, tenant_id, tmp_path, f"pair:{event}", state)
    assert st["last_error"]["code"] == code
    if detail:
        assert st["last_error"]["detail"] == detail
    if event == "connect_failure":  # whatsmeow's 400, mapped from neonize's enum
        assert st["last_error"]["reason"] == 400
    if event == "temporary_ban":  # whatsmeow's code 102 and its expiry travel along
        assert st["last_error"]["ban_code"] == 102 and st["last_error"]["expire_s"] == 3600


def test_a_pairing_reaches_connected_with_the_device(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path) -> None:
    st = run_pairing(redis_url, booted_redis, tenant_id, tmp_path, "pair", "connected")
    assert st["device"] == "6281234567890:28@s.whatsapp.net"  # from PairStatus, via Go's JID
    assert st["pairing"]["status"] == "paired"


@pytest.mark.parametrize("events", ["keepalive_timeout", "disconnected"])
def test_a_keepalive_timeout_or_a_drop_shows_as_reconnecting(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path,
        events: str) -> None:
    run_pairing(redis_url, booted_redis, tenant_id, tmp_path, f"pair:{events}", "reconnecting")


@pytest.mark.parametrize(("script", "code"), [
    ("qr_drop", "upstream_unreachable"),  # a network drop, not an expiry
    ("passkey", "passkey_unsupported"),
    ("unmapped", "connect_failure"),
])
def test_pairings_that_cannot_go_on_fail_with_their_own_code(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path,
        script: str, code: str) -> None:
    st = run_pairing(redis_url, booted_redis, tenant_id, tmp_path, script, "failed")
    assert st["last_error"]["code"] == code
    assert st["pairing"]["status"] == "failed"
    if script == "unmapped":
        assert "cannot encode" in st["last_error"]["message"]


def test_a_scan_without_multidevice_keeps_the_pairing_going(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path) -> None:
    settings = load_settings({"redis_url": redis_url, "redis_loss_window_s": 0,
                              "pairing_timeout_s": 60}, environ={})
    pool = neonize_pool(tmp_path, script="scanned_again")
    host = SessionHost(redis.Redis.from_url(redis_url), settings, pool, "w-neonize",
                       send_kick=lambda *a: None)
    assert host.register()  # the first heartbeat, as start() writes it
    try:
        SessionStore(booted_redis).begin_pairing(tenant_id, "qr", 60)
        assert host.kick(tenant_id) == "claimed"
        wait_for(lambda: SessionStore(booted_redis).current_qr(tenant_id).get("index") == 2,
                 15, "the third QR code, after the status")
        assert SessionStore(booted_redis).status(tenant_id)["state"] == "pairing"
    finally:
        host.shutdown(3)
        pool.shutdown()


def pg_connections(admin_url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                           (database,)).fetchone()
    return int(row[0]) if row else 0


def test_postgres_connections_stay_within_the_budget_and_go_back(
        postgres_admin_url: str, postgres_url: str, closed_port_proxy: str) -> None:
    """Real neonize on PostgreSQL: every session opens a store container (a connection)
    that is never closed. 50 open/close cycles: a host takes WA_HOST_MAX_STORE_OPENS opens,
    then none, and is stopped once empty; the connections go back to the baseline."""
    from urllib.parse import urlsplit

    database = urlsplit(postgres_url).path.lstrip("/")
    baseline = pg_connections(postgres_admin_url, database)
    pool = neonize_pool(postgres_url, proxy=closed_port_proxy, max_store_opens=10)
    most = 0
    try:
        for i in range(50):
            events = Events()
            pool.open_session(f"t{i % 5}", jid=None, on_event=events)
            events.wait_for(EventKind.CLOSED, timeout=15)
            most = max(most, pg_connections(postgres_admin_url, database) - baseline)
        wait_for(lambda: pg_connections(postgres_admin_url, database) <= baseline, 15,
                 "the hosts holding leaked connections to be stopped")
    finally:
        pool.shutdown()
    assert pool.recycled >= 4
    assert most <= 10 + 1  # one host at a time (each session ends at once), its budget
