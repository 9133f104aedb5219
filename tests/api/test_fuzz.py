"""schemathesis against /openapi.json, in-process (WSGI): no 5xx, every answer as documented.

Each operation gets a few dozen generated requests, valid and invalid
(negative mode), sent with a valid tenant key, the admin token, a key of
another tenant, garbage or nothing. Bounded: ``MAX_EXAMPLES`` per mode and
operation, no shrinking, no example database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from api.openapi import build_spec
from api.services import services_of
from shared.tenants import TenantRegistry
from tests.api.conftest import ADMIN, NO_LIMITS, offline

MAX_EXAMPLES = 50
# positive_data_acceptance: a body valid by the document is never refused (422) by the
# server, so the document is as strict as the server.
# (Only with a tenant named: without X-Tenant-ID or a mapped Host the answer is 400.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# Long-lived streams (Server-Sent Events) would hold a generated request open.
STREAMING = "text/event-stream"


def _operations() -> list[Any]:
    """(mode, method, path) for every operation; invalid mode only where there is input."""
    spec = build_spec(create_app({"redis_url": "redis://127.0.0.1:9/0"}))
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            media = {m for r in operation.get("responses", {}).values()
                     for m in (r.get("content") or {})}
            if STREAMING in media:
                continue
            found.append(pytest.param(GenerationMode.POSITIVE, method.upper(), path,
                                      id=f"valid-{method.upper()}-{path}"))
            if operation.get("parameters") or operation.get("requestBody"):
                found.append(pytest.param(GenerationMode.NEGATIVE, method.upper(), path,
                                          id=f"invalid-{method.upper()}-{path}"))
    return found


@pytest.fixture(scope="module")
def fuzz_app(redis_url: str) -> Iterator[Flask]:
    app = offline(create_app({"redis_url": redis_url, "admin_token": ADMIN,
                              "wa_backend": "sandbox", **NO_LIMITS}))
    yield app
    services_of(app).close()


@pytest.fixture(scope="module")
def credentials(redis_url: str) -> list[dict[str, str]]:
    """Header sets to send: own key, admin, another tenant's key, garbage, none."""
    import uuid

    client = redis.Redis.from_url(redis_url)
    registry = TenantRegistry(client)
    mine, other = f"fuzz-{uuid.uuid4().hex[:8]}", f"fuzz-{uuid.uuid4().hex[:8]}"
    key, other_key = registry.create(mine), registry.create(other)
    client.close()
    return [
        {"X-Tenant-ID": mine, "Authorization": f"Bearer {key}"},
        {"X-Tenant-ID": mine, "Authorization": f"Bearer {ADMIN}"},
        {"Authorization": f"Bearer {ADMIN}"},
        {"X-Tenant-ID": mine, "Authorization": f"Bearer {other_key}"},
        {"X-Tenant-ID": mine, "Authorization": "Bearer wak_garbage"},
        {},
    ]


@pytest.mark.parametrize(("mode", "method", "path"), _operations())
def test_operation_answers_as_documented(
    fuzz_app: Flask, credentials: list[dict[str, str]], mode: GenerationMode, method: str,
    path: str,
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode),
           headers=st.sampled_from(credentials))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any, headers: dict[str, str]) -> None:
        if "X-Tenant-ID" in headers and case.headers and "X-Tenant-ID" in case.headers:
            case.headers.pop("X-Tenant-ID")  # the credentials name the tenant they fit
        response = case.call(headers=headers)
        named = "X-Tenant-ID" in headers or "X-Tenant-ID" in (case.headers or {})
        checks = CHECKS + [positive_data_acceptance] if named else CHECKS
        case.validate_response(response, checks=checks, headers=headers)

    fuzz()
