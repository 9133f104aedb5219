"""Final events end a session for good: no reconnect after logged_out or stream_replaced."""

from __future__ import annotations

import os
import queue
import uuid
from collections.abc import Callable

import pytest
import redis

from shared import keys
from shared.whatsapp.port import EventKind, WaEvent
from shared.whatsapp.sandbox_adapter import SandboxBackend
from tests.e2e.conftest import Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(start_api: Callable[..., Api], start_worker: Callable[..., Worker]) -> Api:
    start_worker("f1")
    return start_api("api-final")


def connected_tenant(api: Api, sandbox: SandboxProcess) -> tuple[Tenant, str]:
    tenant = Tenant(api, f"fin-{uuid.uuid4().hex[:10]}")
    return tenant, pair_and_connect(tenant, api, sandbox)["device"]


def test_unlinked_from_the_phone_is_logged_out_and_never_reconnects(
    api: Api, sandbox: SandboxProcess, rclient: redis.Redis
) -> None:
    tenant, device = connected_tenant(api, sandbox)
    sandbox.unlink(device)
    st = tenant.wait_state(api, "logged_out", 10)
    assert st["device"] is None
    assert st["last_error"]["code"] == "logged_out"
    assert st["last_error"]["detail"] == "unlinked"
    # Once the worker has let the tenant go, nothing of ours can reconnect it.
    wait_for(lambda: not rclient.exists(keys.lease(tenant.id)), 5, "lease released")
    assert [c["mode"] for c in sandbox.connections(tenant.id)] == ["pair", "resume"]
    assert live_connections(sandbox, tenant.id) == []
    assert tenant.call(api, "POST", "/api/whatsapp/pair").status_code == 202, "can pair again"


def test_stream_replaced_fails_the_tenant_and_never_reconnects(
    api: Api, sandbox: SandboxProcess, rclient: redis.Redis, stack_env: dict[str, str]
) -> None:
    tenant, device = connected_tenant(api, sandbox)
    # Someone outside the cluster connects with the same device keys.
    events: queue.Queue[WaEvent] = queue.Queue()
    intruder = SandboxBackend(sandbox.url, os.path.join(stack_env["WA_STORE"], "sandbox"))
    session = intruder.open_session(tenant.id, jid=device, on_event=events.put)
    try:
        assert events.get(timeout=10).kind is EventKind.CONNECTED
        st = tenant.wait_state(api, "failed", 10)
        assert st["last_error"]["code"] == "stream_replaced"
        wait_for(lambda: not rclient.exists(keys.lease(tenant.id)), 5, "lease released")
        conns = sandbox.connections(tenant.id)
        assert [c["end_reason"] for c in conns[:2]] == ["pair_515", "stream_replaced"]
        assert len(conns) == 3, "the replaced owner did not reconnect"
        assert [c["id"] for c in live_connections(sandbox, tenant.id)] == [conns[2]["id"]]
    finally:
        session.close()
        session.wait_closed(5)
