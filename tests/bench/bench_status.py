"""Status: ``GET /api/whatsapp/status`` next to a bare Flask endpoint doing one ``HGETALL``.

The API runs as the Procfile runs it (wapair's gunicorn config, multiprocess
metrics, JSON logs); the floor is the bare app under *plain* gunicorn (no
config file: no access log, nothing wapair adds), with the same 2 workers and
4 threads. Both on one private Redis, in the same run, alternating: closed-loop
throughput with ``wrk`` (median of the rounds), then a fixed-rate run at 500
requests/s with latency measured from each request's due time, with the
servers' CPU time per request. Round trips to Redis per request are counted
in-process with the Flask test client on a counting connection.

Run: ``python -m tests.bench.bench_status`` (writes ``var/bench/status.json``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from api import create_app
from api.services import services_of
from shared import keys
from tests.bench import load
from tests.bench.harness import (
    RoundTrips,
    create_tenants,
    quick,
    redis_cpu_s,
    start_redis,
    summary_ms,
    tree_cpu_s,
    write_result,
)
from tests.support.services import Api

ROUNDS = 3 if quick() else 5
WRK_S = 2.0 if quick() else 6.0
RATE = 500.0
FIXED_S = 2.0 if quick() else 6.0
TENANT = "status-bench"
WORKERS, THREADS = 2, 4  # the Procfile's


def main() -> None:
    server, client = start_redis()
    servers: list[Api] = []
    try:
        api_key = create_tenants(client, [TENANT])[TENANT]
        _seed_status(client)
        env = {"REDIS_URL": server.url}
        api = Api("status-api", {**env, "PROMETHEUS_MULTIPROC_DIR":
                                 tempfile.mkdtemp(prefix="wapair-bench-prom-")})
        api.argv = _gunicorn(api.port, "api.wsgi:app", "-c", "python:api.gunicorn_conf")
        bare = Api("status-bare", env)
        bare.argv = _gunicorn(bare.port, "tests.bench.bare_app:app")
        servers = [api.start(), bare.start()]
        for s in servers:
            s.wait_ready()
        headers = {"X-Tenant-ID": TENANT, "Authorization": f"Bearer {api_key}"}
        targets = {"bare": (bare, "/bare"), "status": (api, "/api/whatsapp/status")}
        result = {"round_trips_per_request": _round_trips(server.url, headers)}
        if load.have_wrk():
            result["throughput"] = _throughput(targets, headers)
        else:
            print("wrk not installed (make bench installs it): throughput skipped")
        result["fixed_rate"] = _fixed(targets, headers, client)
    finally:
        for s in servers:
            s.stop()
        client.close()
        server.cleanup()
    _print(result)
    write_result("status", result)


def _gunicorn(port: int, app: str, *config: str) -> list[str]:
    """gunicorn as the Procfile starts the API: 2 workers, 4 threads (``config`` may add -c)."""
    return [sys.executable, "-m", "gunicorn", *config, "--bind", f"127.0.0.1:{port}",
            "--workers", str(WORKERS), "--threads", str(THREADS), app]


def _seed_status(client) -> None:
    now = time.time()
    client.hset(keys.session(TENANT), mapping={
        "state": "connected", "device": "15550001:1@s.whatsapp.net", "updated_at": f"{now:.3f}",
        "pairing_id": "p_0123456789abcdef", "last_error": ""})
    client.hset(keys.pairing(TENANT), mapping={
        "id": "p_0123456789abcdef", "method": "qr", "status": "paired",
        "started_at": f"{now - 10:.3f}", "deadline_at": f"{now + 110:.3f}",
        "ended_at": f"{now:.3f}"})
    client.set(keys.lease(TENANT), "w1@bench|0123456789abcdef")


def _round_trips(redis_url: str, headers: dict[str, str]) -> dict[str, float]:
    app = create_app({"redis_url": redis_url})
    counter = RoundTrips(services_of(app).redis)
    http = app.test_client()
    http.get("/api/whatsapp/status", headers=headers)  # connection set-up is not per request
    counter.take()
    n = 50
    for _ in range(n):
        assert http.get("/api/whatsapp/status", headers=headers).status_code == 200
    return {"status": counter.take() / n, "bare": 1.0}


def _throughput(targets, headers) -> dict:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for r in range(ROUNDS):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            srv, path = targets[name]
            runs[name].append(load.wrk(srv.url + path, headers, seconds=WRK_S))
    out = {name: {k: round(statistics.median(x[k] for x in rs), 2)
                  for k in ("rps", "p50_ms", "p99_ms", "non_2xx")} | {"rounds": rs}
           for name, rs in runs.items()}
    ratios = [s["rps"] / b["rps"] for s, b in zip(runs["status"], runs["bare"], strict=True)]
    out["ratio_rps_status_to_bare"] = round(statistics.median(ratios), 3)
    return out


def _fixed(targets, headers, client) -> dict:
    """Alternating fixed-rate rounds; the median of the rounds' p50/p99 and CPU per request."""
    rounds: dict[str, list[dict]] = {name: [] for name in targets}
    for r in range(ROUNDS):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            srv, path = targets[name]
            cpu0, rcpu0 = tree_cpu_s(srv.proc.pid), redis_cpu_s(client)
            run = load.fixed_rate("127.0.0.1", srv.port, path, headers, rate=RATE,
                                  seconds=FIXED_S)
            n = len(run["latencies"])
            rounds[name].append({
                **summary_ms(run["latencies"]), "achieved_rps": round(run["achieved_rps"], 1),
                "statuses": run["statuses"],
                "server_cpu_us_per_request": round((tree_cpu_s(srv.proc.pid) - cpu0) / n * 1e6, 1),
                "redis_cpu_us_per_request": round((redis_cpu_s(client) - rcpu0) / n * 1e6, 1)})
    out: dict = {}
    for name, rs in rounds.items():
        out[name] = {k: round(statistics.median(x[k] for x in rs), 2)
                     for k in ("p50_ms", "p99_ms", "max_ms", "achieved_rps",
                               "server_cpu_us_per_request", "redis_cpu_us_per_request")}
        out[name]["rounds"] = rs
    out["ratio_cpu_status_to_bare"] = round(out["status"]["server_cpu_us_per_request"]
                                            / out["bare"]["server_cpu_us_per_request"], 2)
    return out


def _print(result: dict) -> None:
    rt = result["round_trips_per_request"]
    print(f"Redis round trips per request: status {rt['status']}, bare {rt['bare']}")
    if "throughput" in result:
        t = result["throughput"]
        for name in ("bare", "status"):
            print(f"wrk {name:>6}: {t[name]['rps']:>8.0f} req/s  p50 {t[name]['p50_ms']} ms  "
                  f"p99 {t[name]['p99_ms']} ms")
        print(f"status/bare throughput (median of {ROUNDS} paired rounds): "
              f"{t['ratio_rps_status_to_bare']}")
    f = result["fixed_rate"]
    for name in ("bare", "status"):
        x = f[name]
        print(f"{RATE:.0f} req/s {name:>6}: p50 {x['p50_ms']} ms  p99 {x['p99_ms']} ms  "
              f"achieved {x['achieved_rps']}  server CPU {x['server_cpu_us_per_request']} us/req "
              f"(median of {ROUNDS} rounds)")
    print(f"server CPU per request status/bare: {f['ratio_cpu_status_to_bare']}")


if __name__ == "__main__":
    main()
