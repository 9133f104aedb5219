"""An API app on the test Redis, and a tenant with its key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import services_of
from shared.outbound import OutboundPolicy
from shared.tenants import TenantRegistry

ADMIN = "admin-token-for-tests-0123456789"
# Every test client calls from 127.0.0.1 on one Redis: keep the limits out of
# the way except in the tests about them (test_ratelimit.py).
NO_LIMITS = {"rate_limit_tenant": "100000/minute", "rate_limit_address": "100000/minute"}


#: Names the API tests' webhooks use, and what they resolve to (no DNS is asked).
HOSTS = {"hooks.example.com": ["93.184.215.14"], "internal.example.com": ["10.0.0.7"],
         "localhost": ["127.0.0.1", "::1"]}


def offline_resolve(host: str, port: int) -> list[str]:
    """A resolver that knows HOSTS only: an API test never sends a DNS query."""
    if host not in HOSTS:
        raise OSError(f"{host} is not in the tests' hosts table")
    return HOSTS[host]


def offline(app: Flask) -> Flask:
    """``app`` with a strict outbound policy on the tests' hosts table."""
    services_of(app).outbound = OutboundPolicy(resolve=offline_resolve)
    return app


@pytest.fixture
def app(redis_url: str) -> Iterator[Flask]:
    flask_app = offline(create_app({"redis_url": redis_url, "admin_token": ADMIN,
                                    "pairing_timeout_s": 120, "wa_backend": "sandbox",
                                    **NO_LIMITS}))
    yield flask_app
    services_of(flask_app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tenant(redis_client: redis.Redis, tenant_id: str) -> tuple[str, str]:
    """(tenant id, API key)."""
    return tenant_id, TenantRegistry(redis_client).create(tenant_id)


def auth(tenant: tuple[str, str]) -> dict[str, str]:
    return {"X-Tenant-ID": tenant[0], "Authorization": f"Bearer {tenant[1]}"}
