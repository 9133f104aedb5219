"""Metrics and logs from real processes: gunicorn in multiprocess mode, a worker's exporter,
and JSON log lines with context and without secrets."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ADMIN, Tenant, pair_and_connect
from tests.support.ports import free_port, wait_for
from tests.support.receiver import Receiver
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow
METRICS_TOKEN = "e2e-metrics-token-0123456789"


def scrape(url: str, token: str | None = None) -> dict[tuple[str, frozenset], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(response.text) for s in f.samples}


def test_metrics_and_logs_of_a_pairing(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    api = start_api("api-metrics", PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="wapair-prom-"),
                    METRICS_TOKEN=METRICS_TOKEN, LOG_FORMAT="json")
    port = free_port()
    worker = start_worker("m1", WORKER_METRICS_PORT=str(port), LOG_FORMAT="json")
    def worker_metrics() -> dict[tuple[str, frozenset], float] | None:
        # Gauges are set every maintenance round and leases renewed every TTL/3.
        got = scrape(f"http://127.0.0.1:{port}/metrics")
        delivered = frozenset({"outcome": "delivered"}.items())
        settled = (got[("wapair_owned_tenants", frozenset())] == 1
                   and got[("wapair_lease_renew_seconds_count", frozenset())] >= 1
                   and got.get(("wapair_webhook_deliveries_total", delivered), 0) >= 1)
        return got if settled else None

    tenant = Tenant(api, f"obs-{uuid.uuid4().hex[:8]}")
    receiver = Receiver([204])
    with receiver:
        hook = tenant.call(api, "PUT", "/api/whatsapp/webhook", json={"url": receiver.url})
        assert hook.status_code == 200, hook.text
        st = pair_and_connect(tenant, api, sandbox)
        assert st["owner"] == worker.worker_id
        wait_for(lambda: receiver.requests, 10, "a webhook delivery")
        w = wait_for(worker_metrics, 10, "the worker's gauges, a renewal and a delivery")

    # 20 requests spread over gunicorn's 2 processes are all counted once, in one scrape.
    for _ in range(20):
        assert requests.get(f"{api.url}/health", timeout=5).status_code == 200
    got = scrape(f"{api.url}/metrics", METRICS_TOKEN)
    health = frozenset({"route": "/health", "method": "GET", "status": "200"}.items())
    assert got[("wapair_http_requests_total", health)] >= 20
    before = got[("wapair_http_requests_total", health)]
    for _ in range(10):
        requests.get(f"{api.url}/health", timeout=5)
    assert scrape(f"{api.url}/metrics", METRICS_TOKEN)[
        ("wapair_http_requests_total", health)] == before + 10
    assert got[("wapair_pairings_started_total", frozenset({"method": "qr"}.items()))] == 1
    assert got[("wapair_workers_alive", frozenset())] == 1
    assert got[("wapair_tenants", frozenset({"state": "connected"}.items()))] == 1
    assert requests.get(f"{api.url}/metrics", timeout=5).status_code == 401

    assert w[("wapair_live_sessions", frozenset({"mode": "resume"}.items()))] == 1
    ok = frozenset({"outcome": "succeeded", "reason": "succeeded"}.items())
    assert w[("wapair_pairings_ended_total", ok)] == 1
    assert w[("wapair_pairing_first_qr_seconds_count", frozenset())] == 1
    assert w[("wapair_pairing_connected_seconds_count", frozenset())] == 1

    # Logs: JSON lines with the tenant's context; no token, key or webhook secret anywhere.
    key = tenant.headers["Authorization"].split()[1]
    secret = hook.json()["secret"]
    for service in (api, worker):
        text = service.log()
        for leak in (ADMIN, key, METRICS_TOKEN, secret):
            assert leak not in text
    lines = [json.loads(x) for x in worker.log().splitlines() if x.startswith("{")]
    about = [x for x in lines if x.get("tenant") == tenant.id]
    assert about and all(x["worker"] == worker.worker_id for x in about)
    assert any(x.get("fence") and x.get("pairing_id") for x in about)
    api_lines = [json.loads(x) for x in api.log().splitlines() if x.startswith("{")]
    (accepted,) = [x for x in api_lines if x.get("route") == "/api/whatsapp/pair"]
    assert (accepted["tenant"], accepted["status"]) == (tenant.id, 202)
    # One line per request (issue 13): the app's, with its duration; gunicorn writes none.
    assert isinstance(accepted["duration_ms"], float) and accepted["msg"].endswith("ms")
    assert not [x for x in api_lines if x["logger"] == "gunicorn.access"]
    assert sum(1 for x in api_lines if x.get("route") == "/health") >= 30
    assert not [x for x in api.log().splitlines() if "GET /health HTTP/1.1" in x]
    assert any(x.get("pairing_id") == accepted["pairing_id"] for x in about), \
        "one pairing id from the API's line to the worker's"
