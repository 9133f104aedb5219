"""Admin tenant creation and the health check."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from api import create_app
from shared import keys
from tests.api.conftest import ADMIN
from tests.api.test_whatsapp import assert_error

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def test_admin_creates_a_tenant_and_its_key_works(
    client: FlaskClient, redis_client: redis.Redis, tenant_id: str
) -> None:
    response = client.post("/api/admin/tenants", headers=ADMIN_HEADERS,
                           json={"id": tenant_id, "domain": f"{tenant_id}.example.org"})
    assert response.status_code == 201
    key = response.get_json()["api_key"]
    stored = redis_client.hgetall(keys.tenant_record(tenant_id))
    assert key.encode() not in b"".join(stored.values()), "only a hash of the key is stored"
    ok = client.get("/api/whatsapp/status",
                    headers={"X-Tenant-ID": tenant_id, "Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    again = client.post("/api/admin/tenants", headers=ADMIN_HEADERS, json={"id": tenant_id})
    assert_error(again, 409, "conflict")


def test_admin_rejects_bad_input_and_bad_tokens(client: FlaskClient) -> None:
    assert_error(client.post("/api/admin/tenants", json={"id": "ok-id"}), 401)
    assert_error(client.post("/api/admin/tenants", headers={"Authorization": "Bearer nope"},
                             json={"id": "ok-id"}), 401)
    for body in ({"id": "Bad Id"}, {}, {"id": "ok-id", "x": 1}, {"id": "ok", "domain": "not a"}):
        assert_error(client.post("/api/admin/tenants", headers=ADMIN_HEADERS, json=body), 422)


def test_admin_api_is_off_without_a_token(redis_url: str) -> None:
    app = create_app({"redis_url": redis_url, "admin_token": None})
    response = app.test_client().post("/api/admin/tenants", json={"id": "x"},
                                      headers={"Authorization": "Bearer anything-at-all"})
    assert_error(response, 403, "forbidden")


def test_health_reports_redis_and_workers(client: FlaskClient) -> None:
    body = client.get("/health").get_json()
    assert body["redis"] == "ok" and body["status"] in ("ok", "degraded")
    assert isinstance(body["workers"], int)


def test_health_is_503_when_redis_is_unreachable() -> None:
    from tests.support.ports import free_port

    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = app.test_client().get("/health")
    assert_error(response, 503, "store_unavailable")
    assert response.headers["Retry-After"]


def test_every_endpoint_is_503_not_500_when_redis_is_unreachable() -> None:
    import time

    from tests.support.ports import free_port

    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0", "admin_token": ADMIN})
    client = app.test_client()
    headers = {**ADMIN_HEADERS, "X-Tenant-ID": "some-tenant"}
    started = time.monotonic()
    for method, path in [("POST", "/api/whatsapp/pair"), ("GET", "/api/whatsapp/status"),
                         ("GET", "/api/whatsapp/qr"), ("POST", "/api/whatsapp/reset"),
                         ("POST", "/api/whatsapp/logout"), ("POST", "/api/admin/tenants")]:
        body = {"id": "x"} if path.endswith("tenants") else None
        response = client.open(path, method=method, headers=headers, json=body)
        assert_error(response, 503, "store_unavailable")
        assert response.headers["Retry-After"]
    assert time.monotonic() - started < 10, "fails fast instead of hanging"
