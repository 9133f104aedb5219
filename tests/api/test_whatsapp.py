"""The tenant endpoints: transitions, auth, and every bad input (4xx JSON, no change)."""

from __future__ import annotations

import json

import pytest
import redis
from flask.testing import FlaskClient

from shared import keys
from tests.api.conftest import ADMIN, auth

Tenant = tuple[str, str]


def snapshot(client: redis.Redis, tenant: str) -> dict[str, object]:
    """Everything a request could change for a tenant."""
    return {
        "session": client.hgetall(keys.session(tenant)),
        "pairing": client.hgetall(keys.pairing(tenant)),
        "mailbox": client.lrange(keys.mailbox(tenant), 0, -1),
        "qr": client.get(keys.qr(tenant)),
    }


def assert_error(response, status: int, code: str | None = None) -> None:  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)


def test_pair_accepts_once_then_429_with_retry_after(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    first = client.post("/api/whatsapp/pair", headers=auth(tenant), json={"method": "qr"})
    assert first.status_code == 202
    body = first.get_json()
    assert body["state"] == "pairing" and body["pairing_id"].startswith("p_")
    assert body["status_url"] == "/api/whatsapp/status" and body["qr_url"] == "/api/whatsapp/qr"
    second = client.post("/api/whatsapp/pair", headers=auth(tenant))
    assert_error(second, 429, "pairing_in_progress")
    assert 1 <= int(second.headers["Retry-After"]) <= 120
    assert redis_client.llen(keys.mailbox(tenant[0])) == 1
    status = client.get("/api/whatsapp/status", headers=auth(tenant)).get_json()
    assert status["state"] == "pairing" and status["pairing"]["status"] == "queued"
    assert status["pairing"]["id"] == body["pairing_id"]
    assert set(status) == {"tenant", "state", "pairing", "device", "owner", "updated_at",
                           "last_error"}


def test_pair_is_409_when_connected(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    redis_client.hset(keys.session(tenant[0]), mapping={"state": "connected", "device": "1:2@s"})
    before = snapshot(redis_client, tenant[0])
    assert_error(client.post("/api/whatsapp/pair", headers=auth(tenant)), 409, "conflict")
    assert snapshot(redis_client, tenant[0]) == before


def test_status_of_a_new_tenant_is_idle(client: FlaskClient, tenant: Tenant) -> None:
    body = client.get("/api/whatsapp/status", headers=auth(tenant)).get_json()
    assert body == {"tenant": tenant[0], "state": "idle", "pairing": None, "device": None,
                    "owner": None, "updated_at": None, "last_error": None}


def test_qr_is_404_without_a_code_and_served_when_present(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    assert_error(client.get("/api/whatsapp/qr", headers=auth(tenant)), 404, "not_found")
    redis_client.set(keys.qr(tenant[0]), json.dumps({"code": "2@abc", "index": 0,
                                                     "expires_at": 1.0}))
    assert client.get("/api/whatsapp/qr", headers=auth(tenant)).get_json()["code"] == "2@abc"


def test_reset_and_logout_queue_commands(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    for path in ("/api/whatsapp/reset", "/api/whatsapp/logout"):
        response = client.post(path, headers=auth(tenant))
        assert response.status_code == 202 and response.get_json()["command_id"]
    kinds = [json.loads(c)["kind"] for c in redis_client.lrange(keys.mailbox(tenant[0]), 0, -1)]
    assert kinds == ["reset", "logout"]


def test_resume_needs_a_linked_device(client: FlaskClient, tenant: Tenant) -> None:
    assert_error(client.post("/api/whatsapp/resume", headers=auth(tenant)), 404)


BAD_BODIES = [
    ("not json", {"Content-Type": "application/json"}, 400, "malformed_request"),
    ('{"method": "qr"', {"Content-Type": "application/json"}, 400, "malformed_request"),
    ("[1, 2]", {"Content-Type": "application/json"}, 400, "malformed_request"),
    ('{"method": "qr"}', {"Content-Type": "text/plain"}, 400, "malformed_request"),
    ('{"method": "carrier-pigeon"}', {"Content-Type": "application/json"}, 422, "invalid_input"),
    ('{"method": "qr", "extra": 1}', {"Content-Type": "application/json"}, 422, "invalid_input"),
    ('{"method": 7}', {"Content-Type": "application/json"}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("body", "headers", "status", "code"), BAD_BODIES)
def test_bad_pair_bodies_are_4xx_and_change_nothing(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis,
    body: str, headers: dict[str, str], status: int, code: str,
) -> None:
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/pair", data=body, headers={**auth(tenant), **headers})
    assert_error(response, status, code)
    assert snapshot(redis_client, tenant[0]) == before


def test_oversized_body_is_413(client: FlaskClient, tenant: Tenant) -> None:
    response = client.post("/api/whatsapp/pair", data="x" * 20_000,
                           headers={**auth(tenant), "Content-Type": "application/json"})
    assert_error(response, 413)


def test_commands_reject_unknown_fields(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    assert_error(client.post("/api/whatsapp/reset", headers=auth(tenant), json={"force": True}),
                 422, "invalid_input")
    assert redis_client.llen(keys.mailbox(tenant[0])) == 0


@pytest.mark.parametrize("path", ["/api/whatsapp/status", "/api/whatsapp/qr"])
def test_credentials_are_required(client: FlaskClient, tenant: Tenant, path: str) -> None:
    assert_error(client.get(path, headers={"X-Tenant-ID": tenant[0]}), 401, "unauthorized")
    assert_error(client.get(path, headers={"X-Tenant-ID": tenant[0],
                                           "Authorization": "Bearer wrong"}), 401)
    assert_error(client.get(path, headers={"X-Tenant-ID": tenant[0],
                                           "Authorization": "Basic abc"}), 401)


def test_a_key_reaches_only_its_own_tenant(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    from shared.tenants import TenantRegistry

    other = f"{tenant[0]}-b"
    TenantRegistry(redis_client).create(other)
    headers = {"X-Tenant-ID": other, "Authorization": f"Bearer {tenant[1]}"}
    before = snapshot(redis_client, other)
    assert_error(client.post("/api/whatsapp/pair", headers=headers), 403, "forbidden")
    assert snapshot(redis_client, other) == before


@pytest.mark.parametrize("bad_id", ["UPPER", "-lead", "a" * 64, "a/b", "a b", "x\x00y", "../x"])
def test_malformed_tenant_ids_are_rejected(client: FlaskClient, bad_id: str) -> None:
    response = client.get("/api/whatsapp/status",
                          headers={"X-Tenant-ID": bad_id, "Authorization": f"Bearer {ADMIN}"})
    assert_error(response, 422, "invalid_input")


def test_unknown_tenant(client: FlaskClient) -> None:
    headers = {"X-Tenant-ID": "nobody-here", "Authorization": f"Bearer {ADMIN}"}
    assert_error(client.get("/api/whatsapp/status", headers=headers), 404, "not_found")
    assert_error(client.get("/api/whatsapp/status", headers={
        "X-Tenant-ID": "nobody-here", "Authorization": "Bearer some-key"}), 401)


def test_host_names_a_tenant_but_never_authenticates(
    client: FlaskClient, redis_client: redis.Redis, tenant_id: str
) -> None:
    from shared.tenants import TenantRegistry

    key = TenantRegistry(redis_client).create(tenant_id, f"{tenant_id}.example.com")
    host = {"Host": f"{tenant_id}.example.com"}
    assert_error(client.get("/api/whatsapp/status", headers=host), 401)
    ok = client.get("/api/whatsapp/status", headers={**host, "Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.get_json()["tenant"] == tenant_id


def test_no_tenant_named(client: FlaskClient, tenant: Tenant) -> None:
    response = client.get("/api/whatsapp/status", headers={"Authorization": f"Bearer {tenant[1]}"})
    assert_error(response, 400, "malformed_request")


def test_unknown_path_and_method_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/whatsapp/nope"), 404)
    assert_error(client.get("/api/whatsapp/pair"), 405)
    for method, path in (("GET", "/api/whatsapp/pair"), ("TRACE", "/pair"),
                         ("PATCH", "/api/whatsapp/webhook"), ("DELETE", "/health")):
        response = client.open(path, method=method)
        assert_error(response, 405, "method_not_allowed")
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")} - {""}
        assert allowed and method not in allowed, (method, path, response.headers)
