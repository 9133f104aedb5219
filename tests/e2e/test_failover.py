"""A worker holding a connected tenant is killed: another takes over, never overlapping."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from tests.e2e.conftest import LEASE_TTL_S, Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow


def test_sigkill_of_the_owner_hands_the_tenant_to_another_worker(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    api = start_api("api-failover")
    workers = {w.worker_id: w for w in (start_worker("k1"), start_worker("k2"))}
    tenant = Tenant(api, f"kill-{uuid.uuid4().hex[:10]}")
    st = pair_and_connect(tenant, api, sandbox)
    owner = st["owner"]
    assert owner in workers
    old = live_connections(sandbox, tenant.id)
    assert len(old) == 1

    killed_at = time.time()
    workers[owner].kill()
    device = st["device"]

    def taken_over() -> dict | None:
        # "owner" is the lease holder: right after the grant, before the new owner writes
        # 'reconnecting', the status still shows the dead owner's 'connected'. Only a
        # session written after the kill is the new owner's (the test once read that
        # window and found no new connection in the sandbox yet).
        now = tenant.status(api)
        moved = (now["state"] == "connected" and now["owner"] not in (None, owner)
                 and (now["updated_at"] or 0) > killed_at)
        return now if moved else None

    st = wait_for(taken_over, LEASE_TTL_S + 5, "another worker to have the tenant connected")
    recovered_in = time.time() - killed_at
    assert st["device"] == device, "resumed the same device"
    print(f"\nfailover after SIGKILL: connected on {st['owner']} in {recovered_in:.2f} s "
          f"(LEASE_TTL_S={LEASE_TTL_S})")
    assert recovered_in <= LEASE_TTL_S + 5

    conns = sandbox.connections(tenant.id)
    before = next(c for c in conns if c["id"] == old[0]["id"])
    after = [c for c in conns if c["started_at"] > old[0]["started_at"]]
    assert before["ended_at"] is not None and before["end_reason"] == "client_closed"
    assert len(after) == 1 and after[0]["started_at"] >= before["ended_at"], (
        "the new connection opened only after the old one closed"
    )
    print(f"gap between old close and new open: "
          f"{after[0]['started_at'] - before['ended_at']:.2f} s")
    assert len(live_connections(sandbox, tenant.id)) == 1
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant.id] == []

