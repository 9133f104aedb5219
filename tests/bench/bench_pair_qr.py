"""Pair to first QR: from ``POST /api/whatsapp/pair`` until ``GET /api/whatsapp/qr`` answers.

A private Redis, the sandbox with no added latency, 2 workers and the API
(gunicorn), all real processes; 500 tenants paired one after another, each
next to a bare Celery no-op task round trip (``delay().get()``) on the same
broker, alternating, so the two distributions come from the same minutes.
"Readable" is when the QR key exists in Redis, polled every 0.2 ms straight
on Redis (the API reads that key and nothing else); one ``GET /api/whatsapp/qr``
then confirms it, and that time is reported too.

Run: ``python -m tests.bench.bench_pair_qr`` (writes ``var/bench/pair_qr.json``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from http.client import HTTPConnection

import redis

from shared import keys
from tests.bench.harness import (
    create_tenants,
    quick,
    size,
    stack_env,
    start_redis,
    store_dir,
    summary_ms,
    write_result,
)
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Service, Worker

TENANTS = size(500, 60)
POLL_S = 0.0002


def main() -> None:
    server, client = start_redis()
    sandbox = SandboxProcess().start()
    # The limiter still runs on every POST /pair (as in production); its limits are
    # raised so that 500 pairings from one address in a minute are not refused.
    env = stack_env(server.url, sandbox.url, store_dir(), RATE_LIMIT_TENANT="1000/minute",
                    RATE_LIMIT_ADDRESS="100000/minute")
    services: list[Service] = []
    try:
        ids = [f"pq{i:04d}" for i in range(TENANTS)]
        api_keys = create_tenants(client, ids)
        workers = [Worker(f"pq{i}", env) for i in range(2)]
        api = Api("pq-api", env)
        noop_worker = Service("pq-noop", [
            sys.executable, "-m", "celery", "-A", "tests.bench.noop_app", "worker",
            "--pool", "threads", "--concurrency", "4", "--queues", "bench.noop",
            "--without-mingle", "--without-gossip", "--loglevel", "WARNING"], env)
        services = [*workers, api, noop_worker]
        for s in services:
            s.start()
        for w in workers:
            w.wait_ready(client)
        api.wait_ready()
        os.environ["REDIS_URL"] = server.url  # the no-op app reads it at import
        from tests.bench.noop_app import noop

        noop.delay().get(timeout=30)  # the no-op worker is up
        http = HTTPConnection("127.0.0.1", api.port, timeout=10)
        pair_s, noop_s, phases = [], [], []
        for i, tenant in enumerate(ids):
            headers = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {api_keys[tenant]}"}
            if i % 2:
                noop_s.append(_noop(noop))
            pair_s.append(_pair(http, client, headers, phases))
            if not i % 2:
                noop_s.append(_noop(noop))
    finally:
        for s in services:
            s.stop()
        sandbox.cleanup()
        client.close()
        server.cleanup()
    result = {"tenants": TENANTS, "pair_to_qr": summary_ms(pair_s),
              "celery_noop_round_trip": summary_ms(noop_s),
              "ratio_p50": round(statistics.median(pair_s) / statistics.median(noop_s), 2),
              "phases_p50_ms": {
                  "post_answered": round(statistics.median(p[0] for p in phases) * 1000, 2),
                  "qr_readable_in_redis": round(statistics.median(p[1] for p in phases) * 1000, 2),
                  "qr_read_through_api": round(statistics.median(p[2] for p in phases) * 1000, 2)},
              "pair_to_qr_through_api": summary_ms([p[2] for p in phases])}
    p, n = result["pair_to_qr"], result["celery_noop_round_trip"]
    print(f"pair -> first QR over {TENANTS} tenants: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms")
    print(f"bare Celery no-op round trip:          p50 {n['p50_ms']} ms, p99 {n['p99_ms']} ms")
    print(f"phases (p50, ms from the POST): {result['phases_p50_ms']}")
    print(f"ratio of the medians: {result['ratio_p50']}" + (" (quick mode)" if quick() else ""))
    write_result("pair_qr", result)


def _noop(task) -> float:
    started = time.perf_counter()
    task.delay().get(timeout=10)
    return time.perf_counter() - started


def _pair(http: HTTPConnection, client: redis.Redis, headers: dict[str, str],
          phases: list[tuple[float, float, float]]) -> float:
    """Seconds until the first QR is readable in Redis; ``phases`` gets (POST answered,
    readable in Redis, first GET /qr answered 200 after that), from the start."""
    tenant = headers["X-Tenant-ID"]
    started = time.perf_counter()
    status, body = _request(http, "POST", "/api/whatsapp/pair", headers, b'{"method": "qr"}')
    assert status == 202, body
    posted = time.perf_counter() - started
    deadline = started + 10
    while not client.exists(keys.qr(tenant)):
        if time.perf_counter() > deadline:
            raise AssertionError(f"no QR within 10 s for {tenant}")
        time.sleep(POLL_S)
    readable = time.perf_counter() - started
    status, body = _request(http, "GET", "/api/whatsapp/qr", headers)
    assert status == 200, body
    phases.append((posted, readable, time.perf_counter() - started))
    return readable


def _request(http: HTTPConnection, method: str, path: str, headers: dict[str, str],
             body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a kept-alive connection (http.client: far less client CPU than requests)."""
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    http.request(method, path, body=body, headers=headers)
    response = http.getresponse()
    return response.status, response.read()


if __name__ == "__main__":
    main()
