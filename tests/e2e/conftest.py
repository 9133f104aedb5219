"""A whole stack of real processes: Redis, the sandbox network, Celery workers, gunicorn APIs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from shared import keys
from tests.support.ports import wait_for
from tests.support.redis_proc import RedisProcess
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

ADMIN = "e2e-admin-token-0123456789abcdef"
LEASE_TTL_S = 3.0


@pytest.fixture(scope="module")
def stack_redis() -> Iterator[RedisProcess]:
    """A Redis of this module's own, so no other test's tenants are in its sweeps."""
    server = RedisProcess().start()
    redis.Redis.from_url(server.url).set(keys.BOOT_MARKER, "1")
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    # Short QR timings; a device that overlaps is removed after 2 s, so an
    # overlap would show its consequence within a test.
    proc = SandboxProcess().start(qr_first_s=20, qr_next_s=5, qr_count=6, removal_delay_s=2)
    yield proc
    proc.cleanup()


def sandbox_stack_env(sandbox: SandboxProcess) -> dict[str, str]:
    """The settings of a stack on ``sandbox`` with short timings (Redis is the caller's)."""
    return {
        "WA_BACKEND": "sandbox",
        "WA_SANDBOX_URL": sandbox.url,
        "WA_STORE": tempfile.mkdtemp(prefix="wapair-store-"),
        "LEASE_TTL_S": str(LEASE_TTL_S),
        "CLAIM_INTERVAL_S": "0.5",
        "CLEANUP_INTERVAL_S": "2",
        "PAIRING_TIMEOUT_S": "30",
        "ADMIN_TOKEN": ADMIN,
        # The webhook receivers of these tests listen on 127.0.0.1.
        "WEBHOOK_ALLOW_PRIVATE": "1",
        # The chaos and failover tests pair and reset far faster than a person.
        "RATE_LIMIT_TENANT": "10000/minute",
        "RATE_LIMIT_ADDRESS": "100000/minute",
    }


@pytest.fixture(scope="module")
def stack_env(stack_redis: RedisProcess, sandbox: SandboxProcess) -> dict[str, str]:
    return {"REDIS_URL": stack_redis.url, **sandbox_stack_env(sandbox)}


@pytest.fixture(scope="module")
def rclient(stack_redis: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def start_worker(
    stack_env: dict[str, str], rclient: redis.Redis
) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(name: str, **env: str) -> Worker:
        worker = Worker(name, {**stack_env, **env}).start()
        started.append(worker)
        return worker.wait_ready(rclient)

    yield start
    for worker in started:
        if worker.alive():
            worker.stop()


@pytest.fixture(scope="module")
def start_api(stack_env: dict[str, str]) -> Iterator[Callable[..., Api]]:
    started: list[Api] = []

    def start(name: str, **env: str) -> Api:
        api = Api(name, {**stack_env, **env}).start()
        started.append(api)
        return api.wait_ready()

    yield start
    for api in started:
        api.stop()


class Tenant:
    """A tenant created through the admin API, with helpers that speak real HTTP."""

    def __init__(self, api: Api, tenant: str) -> None:
        self.id = tenant
        response = requests.post(f"{api.url}/api/admin/tenants", json={"id": tenant},
                                  headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
        assert response.status_code == 201, response.text
        self.headers = {"X-Tenant-ID": tenant,
                        "Authorization": f"Bearer {response.json()['api_key']}"}

    def call(self, api: Api, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{api.url}{path}", headers=self.headers, timeout=10,
                                **kw)

    def status(self, api: Api) -> dict[str, Any]:
        response = self.call(api, "GET", "/api/whatsapp/status")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_state(self, api: Api, state: str, timeout: float, **match: Any) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            st = self.status(api)
            ok = st["state"] == state and all(st.get(k) == v for k, v in match.items())
            return st if ok else None

        return wait_for(reached, timeout, f"tenant {self.id} to be {state} {match}")

    def wait_qr(self, api: Api, timeout: float = 15) -> dict[str, Any]:
        def shown() -> dict[str, Any] | None:
            response = self.call(api, "GET", "/api/whatsapp/qr")
            return dict(response.json()) if response.status_code == 200 else None

        return wait_for(shown, timeout, f"a QR code for {self.id}")


def pair_and_connect(tenant: Tenant, api: Api, sandbox: SandboxProcess) -> dict[str, Any]:
    """Run a whole QR pairing through the API and the sandbox phone; return the status."""
    response = tenant.call(api, "POST", "/api/whatsapp/pair", json={"method": "qr"})
    assert response.status_code == 202, response.text
    qr = tenant.wait_qr(api)
    sandbox.scan(qr["code"])
    return tenant.wait_state(api, "connected", 15)


def live_connections(sandbox: SandboxProcess, tenant: str) -> list[dict[str, Any]]:
    return [c for c in sandbox.connections(tenant) if c["ended_at"] is None]
