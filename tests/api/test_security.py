"""Isolation and hostile input, over every operation the OpenAPI document lists.

Walking the document (not a fixed list) means endpoints added later are
covered too. Streaming answers are opened unbuffered and closed at once, so a
wrongly authorised event stream fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.openapi import build_spec
from api.services import services_of
from shared import keys
from shared.tenants import TenantRegistry, hash_key
from tests.api.conftest import ADMIN, NO_LIMITS
from tests.api.test_whatsapp import assert_error, snapshot

SECRET_CODE = "2@secret-qr-ref-of-tenant-b,bm9pc2U=,aWRlbnRpdHk=,YWR2"


def operations(app: Flask, prefix: str, with_body: bool = False) -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation under ``prefix`` (taking a body)."""
    found = []
    for path, ops in build_spec(app)["paths"].items():
        if path.startswith(prefix):
            found.extend((method.upper(), path) for method, op in ops.items()
                         if not with_body or "requestBody" in op)
    return found


def send(client: FlaskClient, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    """Status and body text; streams are read for at most their first chunk."""
    response = client.open(path, method=method, buffered=False, **kwargs)
    try:
        if response.mimetype == "text/event-stream":
            body = next(iter(response.response), b"")
            text = body.decode() if isinstance(body, bytes) else str(body)
        else:
            text = response.get_data(as_text=True)
        return response.status_code, text
    finally:
        response.close()


@pytest.fixture
def two_tenants(redis_client: redis.Redis, tenant_id: str) -> Iterator[dict[str, Any]]:
    """Tenant A with its key; tenant B with a QR code, a pairing and a device on show."""
    registry = TenantRegistry(redis_client)
    a, b = f"{tenant_id}-a", f"{tenant_id}-b"
    key_a, key_b = registry.create(a), registry.create(b, f"{tenant_id}-b.example.org")
    redis_client.hset(keys.session(b), mapping={"state": "pairing", "pairing_id": "p_secret_b",
                                                "device": "999:1@s.whatsapp.net"})
    redis_client.hset(keys.pairing(b), mapping={"id": "p_secret_b", "status": "qr_shown"})
    redis_client.set(keys.qr(b), json.dumps({"code": SECRET_CODE, "index": 0,
                                             "expires_at": time.time() + 60}), px=60_000)
    yield {"a": a, "key_a": key_a, "b": b, "key_b": key_b, "domain_b": f"{tenant_id}-b.example.org"}


def _b_data(tenants: dict[str, Any]) -> list[str]:
    return [SECRET_CODE, "p_secret_b", "999:1@s.whatsapp.net", tenants["key_b"]]


def test_tenant_a_key_reaches_nothing_of_tenant_b(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, two_tenants: dict[str, Any]
) -> None:
    b = two_tenants["b"]
    before = snapshot(redis_client, b)
    as_a_for_b = {"X-Tenant-ID": b, "Authorization": f"Bearer {two_tenants['key_a']}"}
    tenant_ops = operations(app, "/api/whatsapp/")
    assert len(tenant_ops) >= 6
    for method, path in tenant_ops:
        for extra in ({}, {"Host": two_tenants["domain_b"]}):
            status, body = send(client, method, path, headers={**as_a_for_b, **extra})
            assert status in (403, 404), f"{method} {path}: {status}"
            assert not any(secret in body for secret in _b_data(two_tenants)), path
    # Through B's domain with A's key and no X-Tenant-ID: still B, still refused.
    host_b = {"Host": two_tenants["domain_b"], "Authorization": f"Bearer {two_tenants['key_a']}"}
    assert send(client, "GET", "/api/whatsapp/qr", headers=host_b)[0] == 403
    for method, path in operations(app, "/api/admin/"):
        concrete = path.replace("{tenant}", b)
        status, body = send(client, method, concrete, headers=as_a_for_b, json={"id": "x-y"}
                            if method == "POST" and concrete.endswith("tenants") else None)
        assert status == 401, f"{method} {concrete}: a tenant key is not the admin token"
    assert snapshot(redis_client, b) == before
    assert TenantRegistry(redis_client).key_matches(b, two_tenants["key_b"])


GARBAGE = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer    "},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": f"Token {ADMIN}"},
    {"Authorization": "Bearer " + "x" * 4000},
    {"Authorization": "Bearer wak_\x00\x01\x7f"},
    {"Authorization": f"Bearer {ADMIN[:-1]}"},
    {"Authorization": f"Bearer {ADMIN}x"},
]


@pytest.mark.parametrize("headers", GARBAGE, ids=range(len(GARBAGE)))
def test_missing_and_garbage_credentials_get_401_everywhere(
    app: Flask, client: FlaskClient, two_tenants: dict[str, Any], headers: dict[str, str]
) -> None:
    for method, path in operations(app, "/api/"):
        concrete = path.replace("{tenant}", two_tenants["b"])
        status, body = send(client, method, concrete,
                            headers={"X-Tenant-ID": two_tenants["b"], **headers})
        assert status == 401, f"{method} {concrete} with {list(headers.values())[:1]}: {status}"
        assert not any(secret in body for secret in _b_data(two_tenants))


def test_bodies_over_the_limit_get_413_and_bad_json_400(
    app: Flask, client: FlaskClient, two_tenants: dict[str, Any], redis_client: redis.Redis
) -> None:
    limit = services_of(app).settings.max_body_bytes
    own = {"X-Tenant-ID": two_tenants["b"], "Authorization": f"Bearer {two_tenants['key_b']}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    before = snapshot(redis_client, two_tenants["b"])
    with_body = [(m, p, admin if p.startswith("/api/admin/") else own)
                 for m, p in operations(app, "/api/", with_body=True) if "{" not in p]
    assert len(with_body) >= 4
    for method, path, headers in with_body:
        # A message carries media in base64: its endpoint has a limit of its own.
        allowed = (services_of(app).settings.message_max_body_bytes
                   if path == "/api/whatsapp/messages" else limit)
        huge = json.dumps({"method": "qr", "pad": "x" * (allowed + 1)})
        assert_error(client.open(path, method=method, headers=headers, data=huge,
                                 content_type="application/json"), 413)
        for bad in ('{"method": ', "[1, 2]", '"qr"', "\x00\xff", "{'method': 'qr'}", "NaN"):
            response = client.open(path, method=method, headers=headers, data=bad,
                                   content_type="application/json")
            assert_error(response, 400, "malformed_request")
        assert_error(client.open(path, method=method, headers=headers, data="method=qr",
                                 content_type="application/x-www-form-urlencoded"), 400)
    assert snapshot(redis_client, two_tenants["b"]) == before


TRICKY_IDS = ["../b", "b/../a", "%2e%2e", "b\x00", "b\t", "b\x1b[31m", " b", "B", "b\u202e",
              "ｂ", "b*", "b}{x", "wa:{b}:qr", "a" * 64, "a" * 5000, ""]


def test_control_characters_and_path_tricks_in_tenant_ids(private_redis: redis.Redis) -> None:
    # A Redis of its own: the key diff below must see this test's writes only, not
    # a heartbeat or a drain that another test's worker thread is still finishing.
    url = "redis://{host}:{port}/0".format(**private_redis.connection_pool.connection_kwargs)
    app = create_app({"redis_url": url, "admin_token": ADMIN, "wa_backend": "sandbox",
                      **NO_LIMITS})
    client = app.test_client()
    redis_client = private_redis
    keys_before = set(redis_client.scan_iter("wa:*", count=1000))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for tricky in TRICKY_IDS:
        status, body = send(client, "GET", "/api/whatsapp/status",
                            headers={**admin, "X-Tenant-ID": tricky})
        # Surrounding whitespace is trimmed as HTTP does; "b" is then unknown (404).
        assert status in (400, 404, 422), (tricky, status)
        response = client.post("/api/admin/tenants", headers=admin, json={"id": tricky})
        assert_error(response, 422)
        assert tricky not in response.get_data(as_text=True) or len(tricky) < 3
    for path in ("/api/admin/tenants/..%2f..%2fx", "/api/admin/tenants/%00",
                 "/api/admin/tenants/a%0d%0ab", "/api/admin/tenants/%2e%2e",
                 "/api/admin/tenants/a/../../x/key", "/api/whatsapp/../admin/tenants"):
        for method in ("GET", "POST", "DELETE"):
            status, _ = send(client, method, path, headers=admin)
            assert status in (400, 404, 405, 422), (method, path, status)
    created = set(redis_client.scan_iter("wa:*", count=1000)) - keys_before
    assert not [k for k in created if not k.startswith(b"wa:{t-") and b"fuzz" not in k], created
    services_of(app).close()


def test_no_answer_or_log_line_carries_a_trace_a_key_or_a_secret(
    app: Flask, client: FlaskClient, two_tenants: dict[str, Any], redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api import create_app
    from tests.support.ports import free_port

    secrets = [ADMIN, two_tenants["key_a"], two_tenants["key_b"], hash_key(two_tenants["key_a"]),
               hash_key(two_tenants["key_b"])]
    down = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0", "admin_token": ADMIN})
    bodies = []
    with caplog.at_level(logging.DEBUG):
        for target in (client, down.test_client()):
            for headers in ({"X-Tenant-ID": two_tenants["b"],
                             "Authorization": f"Bearer {two_tenants['key_a']}"},
                            {"X-Tenant-ID": two_tenants["b"], "Authorization": f"Bearer {ADMIN}x"},
                            {"X-Tenant-ID": "../" + two_tenants["key_b"],
                             "Authorization": f"Bearer {two_tenants['key_b']}"},
                            {"Authorization": f"Bearer {ADMIN}"}):
                for method, path in operations(app, "/api/"):
                    concrete = path.replace("{tenant}", two_tenants["key_a"][:10].lower())
                    bodies.append(send(target, method, concrete, headers=headers,
                                       data='{"id": ', content_type="application/json")[1])
    services_of(down).close()
    assert bodies
    for text in bodies + [r.getMessage() for r in caplog.records]:
        assert "Traceback" not in text and 'File "' not in text, text
        assert not any(secret in text for secret in secrets), text
    assert not [r for r in caplog.records if r.exc_info or r.exc_text or r.stack_info]


def test_qr_codes_are_never_served_without_the_tenants_credentials(
    app: Flask, client: FlaskClient, two_tenants: dict[str, Any]
) -> None:
    b, domain = two_tenants["b"], two_tenants["domain_b"]
    reads = [(m, p) for m, p in operations(app, "/api/whatsapp/") if m == "GET"]
    for method, path in reads:
        for query in ("", "?format=png", "?format=svg", "?format=json"):
            for headers in ({"X-Tenant-ID": b}, {"Host": domain}, {"Host": domain,
                            "X-Forwarded-Host": domain, "Authorization": "Bearer "},
                            {"X-Tenant-ID": b, "Cookie": f"key={two_tenants['key_b']}"}):
                status, body = send(client, method, path + query, headers=headers)
                assert status == 401, (path, query, headers, status)
                assert SECRET_CODE not in body
    own = {"X-Tenant-ID": b, "Authorization": f"Bearer {two_tenants['key_b']}"}
    assert SECRET_CODE in send(client, "GET", "/api/whatsapp/qr", headers=own)[1]
