"""Pair to first QR: from ``POST /api/whatsapp/pair`` until ``GET /api/whatsapp/qr`` answers.

A private Redis, the sandbox with no added latency, 2 workers and the API
(gunicorn), all real processes; 500 tenants paired one after another, each
next to a bare Celery no-op task round trip (``delay().get()``) on the same
broker, in rotating order, so the distributions come from the same minutes.
The goal's baseline is stock Celery and kombu. A second no-op worker runs with
wapair's broker transport (``shared.kombu_redis``), and its ratio is printed
too: it shows what the rest of wapair costs once that one saving is given to
the baseline as well.

"Readable" is when the QR is in Redis: the bench blocks on the tenant's event
stream (``XREAD BLOCK``, as the API's SSE endpoint does) until the ``qr`` event,
which the worker writes in the same Lua step as the QR key the API reads. (It
used to poll that key every 0.2 ms, spending CPU that the measured processes
share on 2 cores.) One ``GET /api/whatsapp/qr`` then confirms it, and that time
is reported too.

Run: ``python -m tests.bench.bench_pair_qr`` (writes ``var/bench/pair_qr.json``).
"""

from __future__ import annotations

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
    wait_for_event,
    write_result,
)
from tests.bench.noop_app import QUEUES, make_app
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Service, Worker

TENANTS = size(500, 60)


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
        noop_workers = [Service(f"pq-noop-{kind}", [
            sys.executable, "-m", "celery", "-A", "tests.bench.noop_app", "worker",
            "--pool", "threads", "--concurrency", "4", "--queues", QUEUES[kind],
            "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
            {**env, "NOOP_TRANSPORT": kind}) for kind in QUEUES]
        services = [*workers, api, *noop_workers]
        for s in services:
            s.start()
        for w in workers:
            w.wait_ready(client)
        api.wait_ready()
        noops = {kind: make_app(kind, server.url)[1] for kind in QUEUES}
        for task in noops.values():
            task.delay().get(timeout=30)  # its worker is up
        http = HTTPConnection("127.0.0.1", api.port, timeout=10)
        pair_s, phases = [], []
        noop_s: dict[str, list[float]] = {kind: [] for kind in QUEUES}
        for i, tenant in enumerate(ids):
            headers = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {api_keys[tenant]}"}
            steps = [("pair", None), *((kind, task) for kind, task in noops.items())]
            for kind, task in steps[i % 3:] + steps[:i % 3]:
                if task is None:
                    pair_s.append(_pair(http, client, headers, phases))
                else:
                    noop_s[kind].append(_noop(task))
    finally:
        for s in services:
            s.stop()
        sandbox.cleanup()
        client.close()
        server.cleanup()
    pair_p50 = statistics.median(pair_s)
    result = {"tenants": TENANTS, "pair_to_qr": summary_ms(pair_s),
              "celery_noop_round_trip": summary_ms(noop_s["stock"]),
              "celery_noop_round_trip_wapair_transport": summary_ms(noop_s["wapair"]),
              "ratio_p50": round(pair_p50 / statistics.median(noop_s["stock"]), 2),
              "ratio_p50_vs_wapair_transport": round(
                  pair_p50 / statistics.median(noop_s["wapair"]), 2),
              "phases_p50_ms": {
                  "post_answered": round(statistics.median(p[0] for p in phases) * 1000, 2),
                  "qr_readable_in_redis": round(statistics.median(p[1] for p in phases) * 1000, 2),
                  "qr_read_through_api": round(statistics.median(p[2] for p in phases) * 1000, 2)},
              "pair_to_qr_through_api": summary_ms([p[2] for p in phases])}
    p, n = result["pair_to_qr"], result["celery_noop_round_trip"]
    w = result["celery_noop_round_trip_wapair_transport"]
    print(f"pair -> first QR over {TENANTS} tenants: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms")
    print(f"bare Celery no-op round trip:          p50 {n['p50_ms']} ms, p99 {n['p99_ms']} ms")
    print(f"  the same, wapair's broker transport: p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms")
    print(f"phases (p50, ms from the POST): {result['phases_p50_ms']}")
    print(f"ratio of the medians: {result['ratio_p50']} (goal <= 2.5, issue 13); "
          f"against the no-op on "
          f"wapair's transport: {result['ratio_p50_vs_wapair_transport']}"
          + (" (quick mode)" if quick() else ""))
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
    stream = keys.events(tenant)
    newest = client.xrevrange(stream, count=1)
    last_id = newest[0][0] if newest else b"0-0"
    started = time.perf_counter()
    status, body = _request(http, "POST", "/api/whatsapp/pair", headers, b'{"method": "qr"}')
    assert status == 202, body
    posted = time.perf_counter() - started
    readable = wait_for_event(client, stream, last_id, started + 10,
                              lambda fields: fields[b"kind"] == b"qr",
                              f"a QR within 10 s for {tenant}") - started
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
