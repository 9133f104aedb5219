"""GET /metrics: protected by METRICS_TOKEN (or the admin token); requests counted by route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import services_of
from tests.api.conftest import ADMIN, auth

METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def metrics_client(redis_url: str) -> Iterator[FlaskClient]:
    app = create_app({"redis_url": redis_url, "admin_token": ADMIN,
                      "metrics_token": METRICS_TOKEN})
    yield app.test_client()
    services_of(app).close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_metrics_need_the_metrics_or_admin_token(metrics_client: FlaskClient) -> None:
    assert metrics_client.get("/metrics").status_code == 401
    assert metrics_client.get("/metrics", headers=_bearer("wrong-token-xxxxxxxx")).status_code \
        == 401
    assert metrics_client.get("/metrics", headers=_bearer(METRICS_TOKEN)).status_code == 200
    assert metrics_client.get("/metrics", headers=_bearer(ADMIN)).status_code == 200


def test_metrics_are_off_without_any_token(redis_url: str) -> None:
    app: Flask = create_app({"redis_url": redis_url, "admin_token": None})
    response = app.test_client().get("/metrics", headers=_bearer("anything-at-all-123"))
    assert response.status_code == 403 and "METRICS_TOKEN" in response.json["error"]["message"]


def test_requests_are_counted_by_url_rule_never_raw_path(
    metrics_client: FlaskClient, tenant: tuple[str, str]
) -> None:
    assert metrics_client.post("/api/whatsapp/pair", headers=auth(tenant)).status_code == 202
    assert metrics_client.get(f"/no/such/{tenant[0]}").status_code == 404
    body = metrics_client.get("/metrics", headers=_bearer(METRICS_TOKEN)).get_data(as_text=True)
    assert ('wapair_http_requests_total{method="POST",route="/api/whatsapp/pair",status="202"}'
            in body)
    assert 'route="unmatched",status="404"' in body
    assert tenant[0] not in body.split("wapair_mailbox_depth_top")[0]
    assert 'wapair_pairings_started_total{method="qr"}' in body
    assert "wapair_redis_up 1.0" in body
