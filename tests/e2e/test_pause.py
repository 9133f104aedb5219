"""SIGSTOP of an owner past the lease TTL: no reconnect fight, no removed device."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Callable

import pytest

from tests.e2e.conftest import LEASE_TTL_S, Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow


def test_a_paused_owner_never_touches_the_tenant_again_after_resuming(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    """SIGSTOP past the TTL (a GC pause): the paused worker's connection host drops the
    connection by itself before the lease could go elsewhere, so the new owner's connection
    never overlaps it; the paused worker fences itself on SIGCONT and never reconnects."""
    api = start_api("api-pause")
    workers = {w.worker_id: w for w in (start_worker("p1"), start_worker("p2"))}
    tenant = Tenant(api, f"pause-{uuid.uuid4().hex[:10]}")
    st = pair_and_connect(tenant, api, sandbox)
    paused = workers[st["owner"]]
    assert paused.proc is not None
    paused_client = f"{socket.gethostname()}:{paused.proc.pid}"
    old = live_connections(sandbox, tenant.id)[0]
    assert old["client"] == paused_client

    paused.signal(signal.SIGSTOP)
    try:
        tenant.wait_state(api, "connected", LEASE_TTL_S + 5)
        wait_for(lambda: tenant.status(api)["owner"] not in (None, paused.worker_id),
                 LEASE_TTL_S + 5, "another owner")
        wait_for(lambda: [c for c in live_connections(sandbox, tenant.id)
                          if c["client"] != paused_client], LEASE_TTL_S + 5,
                 "the new owner's connection")
    finally:
        paused.signal(signal.SIGCONT)
    resumed_at = time.time()
    dropped = next(c for c in sandbox.connections(tenant.id) if c["id"] == old["id"])
    # Dropped by the host, not replaced by the server (as it was while the client lived
    # in the paused process itself), and before the new owner's connection began.
    assert dropped["end_reason"] == "client_closed", dropped
    newer = [c for c in sandbox.connections(tenant.id) if c["id"] > old["id"]]
    assert newer and dropped["ended_at"] <= min(c["started_at"] for c in newer)
    # Watch a few maintenance rounds of the resumed worker: it must not dial again.
    wait_for(lambda: "self-fencing" in paused.log(), 5, "the paused worker to fence itself")
    time.sleep(1.0)  # observing an absence: nothing may happen in this window
    conns = sandbox.connections(tenant.id)
    assert [c for c in conns if c["client"] == paused_client and c["started_at"] > resumed_at
            ] == [], "the paused worker reconnected"
    live = live_connections(sandbox, tenant.id)
    assert len(live) == 1 and live[0]["client"] != paused_client
    assert not [c for c in conns if c["end_reason"] == "device_removed"]
    kinds = {c["kind"] for c in sandbox.conflicts() if c["tenant"] == tenant.id}
    assert kinds == set(), kinds
    assert tenant.status(api)["state"] == "connected"
