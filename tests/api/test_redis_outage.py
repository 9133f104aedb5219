"""Redis down or stalled: every Redis-backed endpoint answers 503 + Retry-After, quickly."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from kombu.exceptions import OperationalError

from api import create_app
from api.services import services_of
from shared import keys
from shared.taskqueue import send_kick
from shared.tenants import TenantRegistry
from tests.api.conftest import ADMIN
from tests.support.redis_proc import RedisProcess

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
# Lease TTL 3 s gives Redis calls a 0.5 s socket timeout; a broker publish is
# bounded by shared.taskqueue at about 3 x 1.5 s.
BOUND_S = 6.0


@pytest.fixture
def outage_redis() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.cleanup()


def _calls(tenant: str, key: str) -> list[tuple[str, str, dict]]:
    auth = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {key}"}
    return [
        ("GET", "/health", {}),
        ("GET", "/api/whatsapp/status", auth),
        ("GET", "/api/whatsapp/qr", auth),
        ("POST", "/api/whatsapp/pair", auth),
        ("POST", "/api/whatsapp/reset", auth),
        ("GET", "/api/admin/tenants", ADMIN_HEADERS),
        ("POST", "/api/admin/tenants", ADMIN_HEADERS),
    ]


def _assert_all_503(client: FlaskClient, tenant: str, key: str) -> None:
    for method, path, headers in _calls(tenant, key):
        started = time.monotonic()
        body = {"id": "new-tenant"} if path == "/api/admin/tenants" else {}
        response = client.open(path, method=method, headers=headers,
                               json=body if method == "POST" else None)
        took = time.monotonic() - started
        assert response.status_code == 503, (method, path, response.get_data(as_text=True))
        assert response.headers["Retry-After"].isdigit()
        assert response.get_json()["error"]["code"] == "store_unavailable"
        assert took < BOUND_S, f"{method} {path} took {took:.1f} s"


def test_redis_down_then_stalled_then_back(outage_redis: RedisProcess) -> None:
    app = create_app({"redis_url": outage_redis.url, "admin_token": ADMIN, "lease_ttl_s": 3,
                      "wa_backend": "sandbox"})
    client = app.test_client()
    tenant = "outage-t"
    key = TenantRegistry(services_of(app).redis).create(tenant)
    auth = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {key}"}
    assert client.get("/api/whatsapp/status", headers=auth).status_code == 200

    outage_redis.stop()  # refused at once
    _assert_all_503(client, tenant, key)

    outage_redis.start()  # empty: the tenant is gone with the data (no persistence here)
    key = TenantRegistry(services_of(app).redis).create(tenant)
    services_of(app).redis.set(keys.BOOT_MARKER, "1")
    assert outage_redis.proc is not None
    os.kill(outage_redis.proc.pid, signal.SIGSTOP)  # stalled: timeouts, not refusals
    try:
        _assert_all_503(client, tenant, key)
        # The broker publish alone (the kick after an accepted command) is bounded too.
        started = time.monotonic()
        with pytest.raises(OperationalError):
            send_kick(services_of(app).celery, tenant, None)
        assert time.monotonic() - started < BOUND_S
    finally:
        os.kill(outage_redis.proc.pid, signal.SIGCONT)

    # Back: the same app recovers with no restart, the command path included.
    auth = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {key}"}
    assert client.get("/health").status_code == 200
    assert client.post("/api/whatsapp/pair", headers=auth, json={}).status_code == 202
    assert client.get("/api/whatsapp/status", headers=auth).get_json()["state"] == "pairing"
