"""``GET /api/whatsapp/status`` of this checkout and of another one, beside the bare floor.

Three servers on one private Redis, in the same run: the bare app under plain
gunicorn (the floor of ``bench_status.py``), the API of another checkout
(``BENCH_OTHER_CHECKOUT``, e.g. a ``git worktree`` of main sharing this
``.venv``) and this checkout's API, both as the Procfile runs them; all 2
workers, 4 threads. The rounds alternate (``bench_status``'s own loops: wrk,
then the fixed rate of 500 requests/s with server CPU per request), so a
before/after pair of figures comes from the same minutes of a noisy machine.

Run: ``BENCH_OTHER_CHECKOUT=../main-wt python -m tests.bench.compare_status``
(``BENCH_QUICK=1``: 3 short rounds). Prints JSON; writes
``var/bench/compare_status.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

import tests.support.services as processes
from tests.bench import bench_status as bs
from tests.bench import load
from tests.bench.harness import create_tenants, start_redis, write_result
from tests.support.services import Api


def _api(name: str, root: Path, env: dict[str, str]) -> Api:
    api = Api(name, {**env, "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="wapair-cmp-")})
    api.argv = bs._gunicorn(api.port, "api.wsgi:app", "-c", "python:api.gunicorn_conf")
    here, processes.ROOT = processes.ROOT, root  # the process imports the code under its cwd
    try:
        api.start()
    finally:
        processes.ROOT = here
    return api


def _ratios(rounds: dict[str, list[float]], over: str) -> dict[str, float]:
    return {name: round(statistics.median(x / b for x, b in zip(xs, rounds[over], strict=True)), 3)
            for name, xs in rounds.items() if name != over}


def main() -> None:
    other = Path(os.environ["BENCH_OTHER_CHECKOUT"]).resolve()
    server, client = start_redis()
    servers: list[Api] = []
    try:
        api_key = create_tenants(client, [bs.TENANT])[bs.TENANT]
        bs._seed_status(client)
        env = {"REDIS_URL": server.url}
        bare = Api("cmp-bare", env)
        bare.argv = bs._gunicorn(bare.port, "tests.bench.bare_app:app")
        servers = [bare.start(), _api("cmp-other", other, env),
                   _api("cmp-this", processes.ROOT, env)]
        for s in servers:
            s.wait_ready()
        headers = {"X-Tenant-ID": bs.TENANT, "Authorization": f"Bearer {api_key}"}
        path = "/api/whatsapp/status"
        # bench_status's loops know "bare" and "status": "status" is this checkout's.
        targets = {"bare": (servers[0], "/bare"), "other": (servers[1], path),
                   "status": (servers[2], path)}
        result: dict = {"other_checkout": str(other)}
        if load.have_wrk():
            wrk = bs._throughput(targets, headers)
            rps = {n: [r["rps"] for r in wrk[n]["rounds"]] for n in targets}
            result["wrk_rps_rounds"] = rps
            result["wrk_rps_median"] = {n: statistics.median(v) for n, v in rps.items()}
            result["wrk_ratio_to_bare"] = _ratios(rps, "bare")
        fixed = bs._fixed(targets, headers, client)
        cpu = {n: [r["server_cpu_us_per_request"] for r in fixed[n]["rounds"]] for n in targets}
        result["fixed_rate"] = {n: {k: v for k, v in fixed[n].items() if k != "rounds"}
                                for n in targets}
        result["cpu_us_rounds"] = cpu
        result["cpu_ratio_to_bare"] = _ratios(cpu, "bare")
        result["cpu_ratio_this_to_other"] = _ratios(
            {"status": cpu["status"], "other": cpu["other"]}, "other")["status"]
    finally:
        for s in servers:
            s.stop()
        client.close()
        server.cleanup()
    print(json.dumps(result, indent=1))
    write_result("compare_status", result)


if __name__ == "__main__":
    main()
