"""Tenant keys via the admin API: list, show, rotate, revoke; a Host never authenticates."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from api.services import services_of
from shared import keys
from shared.tenants import TenantRegistry, hash_key
from tests.api.conftest import ADMIN, auth
from tests.api.test_whatsapp import assert_error

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
Tenant = tuple[str, str]


def test_list_and_show_never_reveal_a_key_or_its_hash(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    listed = client.get("/api/admin/tenants", headers=ADMIN_HEADERS)
    assert listed.status_code == 200
    mine = [t for t in listed.get_json()["tenants"] if t["id"] == tenant[0]]
    assert mine == [client.get(f"/api/admin/tenants/{tenant[0]}", headers=ADMIN_HEADERS).get_json()]
    assert mine[0]["has_key"] is True and mine[0]["domain"] is None
    stored_hash = redis_client.hget(keys.tenant_record(tenant[0]), "key_hash").decode()
    for body in (listed.get_data(as_text=True), str(mine)):
        assert tenant[1] not in body and stored_hash not in body
    assert_error(client.get("/api/admin/tenants/nobody-here", headers=ADMIN_HEADERS), 404)
    assert_error(client.get("/api/admin/tenants/Bad%20Id", headers=ADMIN_HEADERS), 422)
    assert_error(client.get(f"/api/admin/tenants/{tenant[0]}", headers=auth(tenant)), 401)


def test_rotate_replaces_the_key_at_once_and_shows_it_once(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    rotated = client.post(f"/api/admin/tenants/{tenant[0]}/key", headers=ADMIN_HEADERS)
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new_key = rotated.get_json()["api_key"]
    assert new_key.startswith("wak_") and new_key != tenant[1]
    assert_error(client.get("/api/whatsapp/status", headers=auth(tenant)), 401, "unauthorized")
    ok = client.get("/api/whatsapp/status", headers=auth((tenant[0], new_key)))
    assert ok.status_code == 200
    # The index knows only the live key: the old one is nobody's now.
    assert redis_client.hget(keys.KEY_HASHES, hash_key(tenant[1])) is None
    assert redis_client.hget(keys.KEY_HASHES, hash_key(new_key)) == tenant[0].encode()
    assert_error(client.post("/api/admin/tenants/nobody-here/key", headers=ADMIN_HEADERS), 404)


def test_revoke_leaves_only_the_admin_token_until_a_rotate(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    revoked = client.delete(f"/api/admin/tenants/{tenant[0]}/key", headers=ADMIN_HEADERS)
    assert revoked.status_code == 204
    assert_error(client.get("/api/whatsapp/status", headers=auth(tenant)), 401)
    info = client.get(f"/api/admin/tenants/{tenant[0]}", headers=ADMIN_HEADERS).get_json()
    assert info["has_key"] is False
    as_admin = {"X-Tenant-ID": tenant[0], **ADMIN_HEADERS}
    assert client.get("/api/whatsapp/status", headers=as_admin).status_code == 200
    assert redis_client.hget(keys.KEY_HASHES, hash_key(tenant[1])) is None
    assert_error(client.delete("/api/admin/tenants/nobody-here/key", headers=ADMIN_HEADERS), 404)


def test_concurrent_rotations_leave_exactly_one_live_key(
    redis_client: redis.Redis, tenant: Tenant
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    registry = TenantRegistry(redis_client)
    with ThreadPoolExecutor(8) as pool:
        new_keys = list(pool.map(lambda _: registry.rotate(tenant[0]), range(16)))
    live = [k for k in new_keys if registry.key_matches(tenant[0], k)]
    assert len(live) == 1
    indexed = [k for k in new_keys if redis_client.hget(keys.KEY_HASHES, hash_key(k))]
    assert indexed == live


def test_another_tenants_key_is_403_and_a_key_of_nobody_401(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    other = f"{tenant[0]}-b"
    other_key = TenantRegistry(redis_client).create(other)
    wrong = {"X-Tenant-ID": tenant[0], "Authorization": f"Bearer {other_key}"}
    assert_error(client.get("/api/whatsapp/status", headers=wrong), 403, "forbidden")
    nobody = {"X-Tenant-ID": tenant[0], "Authorization": "Bearer wak_not-a-real-key"}
    assert_error(client.get("/api/whatsapp/status", headers=nobody), 401, "unauthorized")
    # Naming a tenant that does not exist with a live key tells nothing about it.
    ghost = {"X-Tenant-ID": "no-such-tenant", "Authorization": f"Bearer {other_key}"}
    assert_error(client.get("/api/whatsapp/status", headers=ghost), 403, "forbidden")


def test_a_mapped_host_names_the_tenant_but_never_authenticates(
    client: FlaskClient, redis_client: redis.Redis, tenant_id: str
) -> None:
    domain = f"{tenant_id}.example.org"
    key = TenantRegistry(redis_client).create(tenant_id, domain)
    host = {"Host": f"{domain}:8000"}
    assert_error(client.get("/api/whatsapp/status", headers=host), 401)
    assert_error(client.get("/api/whatsapp/qr", headers=host), 401)
    assert_error(client.get("/api/whatsapp/status",
                            headers={**host, "Authorization": "Bearer wak_wrong"}), 401)
    ok = client.get("/api/whatsapp/status", headers={**host, "Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.get_json()["tenant"] == tenant_id
    unmapped = {"Host": "elsewhere.example.org", "Authorization": f"Bearer {key}"}
    assert_error(client.get("/api/whatsapp/status", headers=unmapped), 400, "malformed_request")


def test_tenants_created_before_the_key_index_are_indexed_at_start(
    redis_url: str, redis_client: redis.Redis, tenant_id: str
) -> None:
    from api import create_app

    registry = TenantRegistry(redis_client)
    old, other, revoked = tenant_id, f"{tenant_id}-b", f"{tenant_id}-c"
    old_key = registry.create(old)
    registry.create(other)
    revoked_key = registry.create(revoked)
    registry.revoke(revoked)
    redis_client.hdel(keys.KEY_HASHES, hash_key(old_key))  # as if made before the index
    app = create_app({"redis_url": redis_url, "admin_token": ADMIN})
    try:
        response = app.test_client().get("/api/whatsapp/status", headers={
            "X-Tenant-ID": other, "Authorization": f"Bearer {old_key}"})
        assert_error(response, 403, "forbidden")
    finally:
        services_of(app).close()
    assert redis_client.hget(keys.KEY_HASHES, hash_key(old_key)) == old.encode()
    assert redis_client.hget(keys.KEY_HASHES, hash_key(revoked_key)) is None, "stays revoked"
    assert registry.index_key_hashes() == 0, "a second run changes nothing"
