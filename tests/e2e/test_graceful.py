"""SIGTERM of a worker: its sessions move to another worker within 3 s, its pairing is cancelled."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable

import pytest
import redis

from shared import keys
from shared.config import load_settings
from shared.taskqueue import create_celery
from tests.e2e.conftest import Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow
HANDOVER_S = 3.0


def test_sigterm_hands_every_session_over_within_seconds(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    api = start_api("api-graceful")
    leaving = start_worker("g1")
    tenants = [Tenant(api, f"grace-{i}-{uuid.uuid4().hex[:8]}") for i in range(3)]
    old = {}
    for tenant in tenants:
        assert pair_and_connect(tenant, api, sandbox)["owner"] == leaving.worker_id
        old[tenant.id] = live_connections(sandbox, tenant.id)[0]
    pairing = Tenant(api, f"grace-p-{uuid.uuid4().hex[:8]}")
    assert pairing.call(api, "POST", "/api/whatsapp/pair").status_code == 202
    pairing.wait_qr(api)
    staying = start_worker("g2")

    leaving.signal(signal.SIGTERM)
    assert leaving.proc is not None
    leaving.proc.wait(20)

    gaps = []
    for tenant in tenants:
        st = tenant.wait_state(api, "connected", 10, owner=staying.worker_id)
        conns = sandbox.connections(tenant.id)
        before = next(c for c in conns if c["id"] == old[tenant.id]["id"])
        after = [c for c in conns if c["id"] > before["id"]]
        assert before["end_reason"] == "client_closed"
        assert len(after) == 1 and after[0]["device"] == st["device"]
        gap = after[0]["started_at"] - before["ended_at"]
        assert 0 <= gap <= HANDOVER_S, f"{tenant.id} reconnected {gap:.2f} s after its close"
        gaps.append(gap)
    print(f"\ngraceful handover: close-to-reconnect max {max(gaps):.2f} s over {len(gaps)}")

    st = pairing.wait_state(api, "idle", 5)
    assert st["pairing"]["status"] == "cancelled"
    assert st["last_error"]["code"] == "worker_shutdown"
    assert live_connections(sandbox, pairing.id) == []
    # The tenant can pair again at once, on the remaining worker.
    assert pairing.call(api, "POST", "/api/whatsapp/pair").status_code == 202
    pairing.wait_qr(api)
    ids = {t.id for t in [*tenants, pairing]}
    assert [c for c in sandbox.conflicts() if c["tenant"] in ids] == []


def test_remote_shutdown_uses_the_same_handover(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess,
    stack_env: dict[str, str], rclient: redis.Redis,
) -> None:
    """Celery's remote ``shutdown`` control (what a drain command sends) hands over too."""
    api = start_api("api-drain")
    tenant = Tenant(api, f"drain-{uuid.uuid4().hex[:8]}")
    owner = pair_and_connect(tenant, api, sandbox)["owner"]  # the previous test's g2
    spare = start_worker("d2")
    # A new worker takes its first lease REDIS_LOSS_WINDOW_S (1 s) after its first
    # heartbeat (shared/lease.py): wait for its second one (2 s later), as an
    # operator starts the spare before the drain.
    first = rclient.zscore(keys.WORKERS, spare.worker_id)
    wait_for(lambda: (rclient.zscore(keys.WORKERS, spare.worker_id) or 0) > (first or 0), 10,
             "the spare's second heartbeat")
    app = create_celery(load_settings({"redis_url": stack_env["REDIS_URL"]}, environ={}))
    app.control.shutdown(destination=[owner])
    tenant.wait_state(api, "connected", 10, owner=spare.worker_id)
    conns = sandbox.connections(tenant.id)
    assert conns[-1]["started_at"] - conns[-2]["ended_at"] <= HANDOVER_S
    assert spare.alive()
