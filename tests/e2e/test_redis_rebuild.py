"""Redis restarts empty (no persistence): the workers re-seed what they held, then resume it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import redis
import requests

from shared import keys
from tests.e2e.conftest import ADMIN, LEASE_TTL_S, Tenant, pair_and_connect
from tests.support.ports import wait_for
from tests.support.redis_proc import RedisProcess
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow


def test_an_empty_redis_restart_reconnects_the_paired_tenants(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker],
    sandbox: SandboxProcess, stack_redis: RedisProcess, rclient: redis.Redis,
) -> None:
    assert not stack_redis.appendonly, "this Redis must lose everything on restart"
    api = start_api("api-rebuild")
    start_worker("rb1")
    start_worker("rb2")
    tenant = Tenant(api, f"rebuild-{uuid.uuid4().hex[:10]}")
    device = pair_and_connect(tenant, api, sandbox)["device"]
    other = Tenant(api, f"rebuild-{uuid.uuid4().hex[:10]}")
    other_device = pair_and_connect(other, api, sandbox)["device"]
    assert device and other_device

    stack_redis.stop()
    restarted_at = time.time()  # Redis starts after this: its freeze ends later still
    stack_redis.start()

    first_lease_at: list[float] = []
    # API keys are never re-seeded (one rotated just before the loss would come back):
    # the operator's token sees the tenants, and a rotate gives them keys again.
    as_admin = {"X-Tenant-ID": tenant.id, "Authorization": f"Bearer {ADMIN}"}

    def reconnected() -> dict | None:
        if not first_lease_at and rclient.exists(keys.lease(tenant.id)):
            first_lease_at.append(time.time())
        response = requests.get(f"{api.url}/api/whatsapp/status", headers=as_admin, timeout=5)
        if response.status_code != 200:  # 404 until a worker has re-seeded the tenant
            return None
        st = response.json()
        return st if st["state"] == "connected" and st["owner"] else None

    st = wait_for(reconnected, LEASE_TTL_S + 10, "the tenant connected again", interval=0.05)
    recovered_in = time.time() - restarted_at
    assert st["device"] == device, "the same device was resumed"
    assert tenant.call(api, "GET", "/api/whatsapp/status").status_code == 401, "old key"
    for t in (tenant, other):
        rotated = requests.post(f"{api.url}/api/admin/tenants/{t.id}/key", timeout=5,
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert rotated.status_code == 200, rotated.text
        t.headers["Authorization"] = f"Bearer {rotated.json()['api_key']}"
    assert other.wait_state(api, "connected", 5)["device"] == other_device
    assert first_lease_at, "the lease was seen before the tenant was connected"
    # Seen within one poll (~0.1 s) of the grant, and the device dialled only after it.
    assert first_lease_at[0] >= restarted_at + LEASE_TTL_S, (
        f"a lease {first_lease_at[0] - restarted_at:.2f} s after the restart")
    print(f"\nempty Redis restart: first grant after {first_lease_at[0] - restarted_at:.2f} s, "
          f"connected again after {recovered_in:.2f} s (LEASE_TTL_S={LEASE_TTL_S})")

    # The rotated key works for commands.
    response = tenant.call(api, "POST", "/api/whatsapp/pair", json={"method": "qr"})
    assert response.status_code == 409, response.text  # already connected, as it should be

    for t in (tenant, other):
        conns = sorted(sandbox.connections(t.id), key=lambda c: c["started_at"])
        assert conns[-1]["started_at"] >= restarted_at + LEASE_TTL_S
        assert not [c for c in conns if c["end_reason"] in ("device_removed", "stream_replaced")]
        assert [c for c in sandbox.conflicts() if c["tenant"] == t.id] == []
        for before, after in zip(conns, conns[1:], strict=False):
            assert before["ended_at"] is not None and before["ended_at"] <= after["started_at"], (
                "two live connections of the device at once", before, after)
        assert len([c for c in conns if c["ended_at"] is None]) == 1
    assert requests.get(f"{api.url}/health", timeout=5).status_code == 200
