"""The real neonize adapter under the real SessionHost, offline, up to the network boundary."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import redis

from shared import keys
from shared.config import load_settings
from shared.state import SessionStore
from shared.whatsapp.neonize_adapter import NeonizeBackend
from tests.support.ports import wait_for
from workers.session_host import SessionHost


def closed_local_proxy() -> str:
    """A proxy URL where nothing listens, so neonize's dial fails on this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_dial_failure_ends_the_pairing_failed_and_leaves_nothing_running(
    booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path
) -> None:
    settings = load_settings({"redis_url": redis_url, "redis_loss_window_s": 0,
                              "pairing_timeout_s": 60}, environ={})
    backend = NeonizeBackend(str(tmp_path), proxy=closed_local_proxy())
    host = SessionHost(redis.Redis.from_url(redis_url), settings, backend, "w-neonize",
                       send_kick=lambda *a: None)
    assert host.register()  # the first heartbeat, as start() writes it
    try:
        SessionStore(booted_redis).begin_pairing(tenant_id, "qr", 60)
        assert host.kick(tenant_id) == "claimed"

        def ended() -> dict | None:
            st = SessionStore(booted_redis).status(tenant_id)
            return st if st["state"] == "failed" else None

        st = wait_for(ended, 15, "the pairing to fail")
        assert st["last_error"]["code"] == "upstream_unreachable"
        assert st["pairing"]["status"] == "failed"
        assert (tmp_path / f"{tenant_id}.sqlite3").is_file(), "the store was created first"
        wait_for(lambda: not booted_redis.exists(keys.lease(tenant_id)), 5, "lease released")
        wait_for(lambda: tenant_id not in host.sessions, 5, "the host to forget the tenant")
        wait_for(lambda: not [t for t in threading.enumerate()
                              if t.name.startswith("wa-neonize-")], 5, "no client thread left")
    finally:
        host.shutdown(2)
