"""Pairing end to end with real processes, and the one-connection invariant under duplicates."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from shared import keys
from shared.config import load_settings
from shared.taskqueue import KICK_TASK, create_celery
from tests.e2e.conftest import Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(start_api: Callable[..., Api]) -> Api:
    return start_api("api-a")


@pytest.fixture(scope="module")
def api_b(start_api: Callable[..., Api]) -> Api:
    return start_api("api-b")


@pytest.fixture(scope="module")
def two_workers(start_worker: Callable[..., Worker]) -> list[Worker]:
    return [start_worker("w1"), start_worker("w2")]


def new_tenant(api: Api) -> Tenant:
    return Tenant(api, f"e2e-{uuid.uuid4().hex[:10]}")


def test_pair_scan_connected_with_status_at_each_step(
    api: Api, two_workers: list[Worker], sandbox: SandboxProcess
) -> None:
    tenant = new_tenant(api)
    assert tenant.status(api)["state"] == "idle"
    response = tenant.call(api, "POST", "/api/whatsapp/pair", json={"method": "qr"})
    assert response.status_code == 202
    pairing_id = response.json()["pairing_id"]
    st = tenant.status(api)
    assert st["state"] == "pairing" and st["pairing"]["id"] == pairing_id
    qr = tenant.wait_qr(api)
    assert qr["code"] and qr["expires_at"] > time.time() and qr["index"] == 0
    st = tenant.status(api)
    assert st["pairing"]["status"] == "qr" and st["owner"] in {w.worker_id for w in two_workers}
    sandbox.scan(qr["code"])
    st = tenant.wait_state(api, "connected", 15)
    assert st["device"] and st["device"].endswith("@s.whatsapp.net")
    assert st["pairing"]["status"] == "paired" and st["last_error"] is None
    assert tenant.call(api, "GET", "/api/whatsapp/qr").status_code == 404
    conns = sandbox.connections(tenant.id)
    assert [c["mode"] for c in conns] == ["pair", "resume"]
    assert conns[0]["end_reason"] == "pair_515" and conns[1]["ended_at"] is None
    assert conns[1]["device"] == st["device"], "resumed with its own JID"
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant.id] == []
    assert tenant.call(api, "POST", "/api/whatsapp/pair").status_code == 409


def test_fifty_concurrent_pairs_over_two_apis_accept_exactly_one(
    api: Api, api_b: Api, two_workers: list[Worker], sandbox: SandboxProcess
) -> None:
    tenant = new_tenant(api)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    gate = threading.Barrier(50)

    def post(i: int) -> None:
        target = api if i % 2 else api_b
        gate.wait()
        response = tenant.call(target, "POST", "/api/whatsapp/pair")
        with lock:
            results.append((response.status_code, response.headers.get("Retry-After")))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(code for code, _ in results)
    assert codes.count(202) == 1 and codes.count(429) == 49, codes
    assert all(int(ra) >= 1 for code, ra in results if code == 429 and ra)
    assert all(ra for code, ra in results if code == 429), "every 429 carries Retry-After"
    qr = tenant.wait_qr(api)
    sandbox.scan(qr["code"])
    tenant.wait_state(api_b, "connected", 15)
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant.id] == []
    assert [c["mode"] for c in sandbox.connections(tenant.id)] == ["pair", "resume"]


def test_the_same_pair_command_delivered_twice_opens_one_connection(
    api: Api, two_workers: list[Worker], sandbox: SandboxProcess, rclient: redis.Redis,
    stack_env: dict[str, str],
) -> None:
    tenant = new_tenant(api)
    # Hold the tenant's mailbox back while the duplicates are arranged: take the
    # lease as an outside owner, so no worker can drain yet.
    rclient.set(keys.lease(tenant.id), "outsider|x", px=60_000)
    assert tenant.call(api, "POST", "/api/whatsapp/pair").status_code == 202
    command = rclient.lindex(keys.mailbox(tenant.id), 0)
    assert json.loads(command)["kind"] == "pair"
    rclient.rpush(keys.mailbox(tenant.id), command)  # the same command, delivered again
    celery = create_celery(load_settings({"redis_url": stack_env["REDIS_URL"]}, environ={}))
    rclient.delete(keys.lease(tenant.id))
    for _ in range(2):  # and the same kick twice, to any worker
        celery.send_task(KICK_TASK, args=[tenant.id], queue="wapair.claims")
    qr = tenant.wait_qr(api)
    sandbox.scan(qr["code"])
    tenant.wait_state(api, "connected", 15)
    wait_for(lambda: rclient.llen(keys.mailbox(tenant.id)) == 0, 10, "mailbox drained")
    assert [c["mode"] for c in sandbox.connections(tenant.id)] == ["pair", "resume"]
    assert len(live_connections(sandbox, tenant.id)) == 1
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant.id] == []


def test_pairing_timeout_expires_releases_and_a_new_pairing_succeeds(
    start_api: Callable[..., Api], two_workers: list[Worker], sandbox: SandboxProcess,
    rclient: redis.Redis,
) -> None:
    api_short = start_api("api-short", PAIRING_TIMEOUT_S="3")
    tenant = new_tenant(api_short)
    assert tenant.call(api_short, "POST", "/api/whatsapp/pair").status_code == 202
    tenant.wait_qr(api_short)
    st = tenant.wait_state(api_short, "idle", 10)
    assert st["pairing"]["status"] == "expired" and st["last_error"]["code"] == "pairing_expired"
    wait_for(lambda: not rclient.exists(keys.lease(tenant.id)), 5, "lease released")
    assert live_connections(sandbox, tenant.id) == [], "the pairing client was stopped"
    pair_and_connect(tenant, api_short, sandbox)
    assert len(live_connections(sandbox, tenant.id)) == 1


def test_reset_resume_and_logout_reach_the_owner_of_a_connected_tenant(
    api: Api, two_workers: list[Worker], sandbox: SandboxProcess, rclient: redis.Redis
) -> None:
    tenant = new_tenant(api)
    device = pair_and_connect(tenant, api, sandbox)["device"]

    assert tenant.call(api, "POST", "/api/whatsapp/reset").status_code == 202
    st = tenant.wait_state(api, "idle", 10)
    assert st["device"] == device, "reset keeps the device linked"
    assert live_connections(sandbox, tenant.id) == []
    wait_for(lambda: not rclient.exists(keys.lease(tenant.id)), 5, "lease released")

    assert tenant.call(api, "POST", "/api/whatsapp/resume").status_code == 202
    tenant.wait_state(api, "connected", 10, device=device)
    assert [c["mode"] for c in sandbox.connections(tenant.id)] == ["pair", "resume", "resume"]

    assert tenant.call(api, "POST", "/api/whatsapp/logout").status_code == 202
    st = tenant.wait_state(api, "idle", 10, device=None)
    assert live_connections(sandbox, tenant.id) == []
    assert sandbox.connections(tenant.id)[-1]["end_reason"] == "logout"
    assert tenant.call(api, "POST", "/api/whatsapp/resume").status_code == 404
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant.id] == []
