"""Rate limits on pair, reset and logout: per tenant, per address, shared across replicas."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import services_of
from shared import keys
from shared.tenants import TenantRegistry
from tests.api.conftest import ADMIN, auth
from tests.api.test_whatsapp import assert_error

Tenant = tuple[str, str]


@pytest.fixture
def make_app(redis_url: str) -> Iterator:  # noqa: ANN001
    apps: list[Flask] = []

    def make(**settings: object) -> Flask:
        config = {"redis_url": redis_url, "admin_token": ADMIN, "wa_backend": "sandbox",
                  "rate_limit_tenant": "1000/minute", "rate_limit_address": "1000/minute",
                  **settings}
        apps.append(create_app(config))
        return apps[-1]

    yield make
    for app in apps:
        services_of(app).close()


def client_at(app: Flask, address: str | None = None) -> FlaskClient:
    """A test client calling from its own address (counters outlive a test in Redis)."""
    client = app.test_client()
    random = uuid.uuid4().int
    client.environ_base["REMOTE_ADDR"] = address or f"10.{random % 250}.{random // 250 % 250}.1"
    return client


def assert_rate_limited(response, limit: int) -> None:  # noqa: ANN001
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 0 <= int(response.headers["RateLimit-Reset"]) <= 61  # whole seconds, rounded up


def test_per_tenant_limit_is_a_different_429_from_pairing_in_progress(
    make_app, tenant: Tenant, redis_client: redis.Redis  # noqa: ANN001
) -> None:
    client = client_at(make_app(rate_limit_tenant="2/minute"))
    first = client.post("/api/whatsapp/pair", headers=auth(tenant))
    assert first.status_code == 202
    assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
    assert "Retry-After" not in first.headers
    assert_error(client.post("/api/whatsapp/pair", headers=auth(tenant)), 429,
                 "pairing_in_progress")
    assert_rate_limited(client.post("/api/whatsapp/pair", headers=auth(tenant)), 2)
    assert redis_client.llen(keys.mailbox(tenant[0])) == 1, "a limited request changes nothing"
    # Per endpoint: the tenant can still reset out of a pairing loop.
    assert client.post("/api/whatsapp/reset", headers=auth(tenant)).status_code == 202
    other = (f"{tenant[0]}-b", TenantRegistry(redis_client).create(f"{tenant[0]}-b"))
    assert client.post("/api/whatsapp/pair", headers=auth(other)).status_code == 202
    # Reads are never limited.
    for _ in range(5):
        assert client.get("/api/whatsapp/status", headers=auth(tenant)).status_code == 200


def test_the_limit_holds_across_api_replicas(make_app, tenant: Tenant) -> None:  # noqa: ANN001
    replicas = [client_at(make_app(rate_limit_tenant="3/minute")) for _ in range(2)]
    answers = [replicas[i % 2].post("/api/whatsapp/reset", headers=auth(tenant)).status_code
               for i in range(3)]
    assert answers == [202, 202, 202]
    assert_rate_limited(replicas[1].post("/api/whatsapp/reset", headers=auth(tenant)), 3)
    assert_rate_limited(replicas[0].post("/api/whatsapp/reset", headers=auth(tenant)), 3)


def test_per_address_limit_is_shared_by_pair_reset_and_logout(
    make_app, redis_client: redis.Redis, tenant_id: str  # noqa: ANN001
) -> None:
    client = client_at(make_app(rate_limit_address="3/minute"))
    registry = TenantRegistry(redis_client)
    tenants = [(f"{tenant_id}-{i}", registry.create(f"{tenant_id}-{i}")) for i in range(4)]
    assert client.post("/api/whatsapp/pair", headers=auth(tenants[0])).status_code == 202
    assert client.post("/api/whatsapp/reset", headers=auth(tenants[1])).status_code == 202
    assert client.post("/api/whatsapp/logout", headers=auth(tenants[2])).status_code == 202
    assert_rate_limited(client.post("/api/whatsapp/pair", headers=auth(tenants[3])), 3)
    # Unauthenticated attempts count against the address too.
    assert_rate_limited(client.post("/api/whatsapp/reset"), 3)


def test_strangers_cannot_spend_a_tenants_budget(make_app, tenant: Tenant) -> None:  # noqa: ANN001
    app = make_app(rate_limit_tenant="2/minute")
    stranger = client_at(app)
    wrong = {"X-Tenant-ID": tenant[0], "Authorization": "Bearer wak_guess"}
    codes = [stranger.post("/api/whatsapp/reset", headers=wrong).status_code for _ in range(4)]
    assert codes == [401, 401, 429, 429], "failed attempts are limited per address"
    owner = client_at(app)
    assert [owner.post("/api/whatsapp/reset", headers=auth(tenant)).status_code
            for _ in range(2)] == [202, 202]


def test_forwarded_for_counts_only_with_trusted_proxy_hops(
    make_app, tenant_id: str, redis_client: redis.Redis  # noqa: ANN001
) -> None:
    proxy = f"192.0.2.{uuid.uuid4().int % 250}"
    registry = TenantRegistry(redis_client)
    tenants = [(f"{tenant_id}-{i}", registry.create(f"{tenant_id}-{i}")) for i in range(4)]

    def spoofed(client: FlaskClient, tenant: Tenant, i: int) -> int:
        headers = {**auth(tenant), "X-Forwarded-For": f"203.0.113.{i}, 198.51.100.{i}"}
        return client.post("/api/whatsapp/reset", headers=headers).status_code

    direct = client_at(make_app(rate_limit_address="2/minute"), proxy)
    assert [spoofed(direct, t, i) for i, t in enumerate(tenants[:3])] == [202, 202, 429], (
        "without trusted hops X-Forwarded-For is ignored")
    behind = client_at(make_app(rate_limit_address="2/minute", trusted_proxy_hops=1), proxy)
    assert [spoofed(behind, t, 10 + i) for i, t in enumerate(tenants)] == [202] * 4, (
        "one trusted hop: the address the proxy saw (the last one) counts")


def test_a_request_over_one_limit_counts_against_none(
    make_app, tenant: Tenant  # noqa: ANN001
) -> None:
    """All or nothing: the address limit refuses, so the tenant's budget is not spent."""
    app = make_app(rate_limit_tenant="2/minute", rate_limit_address="1/minute")
    address = f"10.9.{uuid.uuid4().int % 250}.9"
    client = client_at(app, address)
    assert client.post("/api/whatsapp/reset", headers=auth(tenant)).status_code == 202
    refused = client.post("/api/whatsapp/reset", headers=auth(tenant))
    assert_rate_limited(refused, 1)  # the address's limit is the one reported
    other = client_at(app)
    second = other.post("/api/whatsapp/reset", headers=auth(tenant))
    assert second.status_code == 202, "the refused request did not use the tenant's second hit"
    assert second.headers["RateLimit-Remaining"] == "0"


def test_the_window_moves_and_reports_its_reset(redis_client: redis.Redis, tenant_id: str
                                                 ) -> None:
    """The script itself, on its own clock: a hit leaves the window one window after it."""
    from shared.scripts import scripts_for

    script = scripts_for(redis_client).rate_limit
    key = f"{keys.RATE_LIMIT_PREFIX}:test:{tenant_id}"

    def hit(now_ms: int) -> list[int]:
        return script(keys=[key], args=[now_ms, uuid.uuid4().hex, 2, 10_000])

    assert hit(1_000) == [1, 1, 1, 10_000]
    assert hit(4_000) == [1, 1, 0, 7_000], "reset: when the oldest hit (at 1 s) leaves"
    assert hit(5_000) == [0, 1, 0, 6_000]
    assert redis_client.zcard(key) == 2, "a refused hit is not recorded"
    assert hit(11_001) == [1, 1, 0, 2_999], "the hit at 1 s has left; the one at 4 s remains"
    assert 0 < redis_client.pttl(key) <= 10_000
    redis_client.delete(key)


def test_with_redis_down_the_limits_let_the_request_through(
    make_app, tenant: Tenant, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    from api.services import services_of

    app = make_app(rate_limit_tenant="1/minute")
    limits = services_of(app).limits
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                         retry=Retry(NoBackoff(), 0))
    limits._client = broken  # a client whose Redis is gone; the key check still works
    client = client_at(app)
    with caplog.at_level("WARNING", logger="api.ratelimit"):
        codes = [client.post("/api/whatsapp/reset", headers=auth(tenant)).status_code
                 for _ in range(2)]
    assert codes == [202, 202]
    assert "rate limits not checked" in caplog.text and "Traceback" not in caplog.text
