"""Capacity: connected sandbox sessions held by 2 workers and their connection hosts.

Tenants are seeded, not paired one by one: their devices go into the sandbox's
``--state`` file and their session hashes into Redis as ``connected`` with the
device JID (what a dead worker leaves behind); the workers then claim and
resume them as they would after a failover. The tenants are let in in steps
(``wa:active``), and at each step, once all are connected, the bench watches a
steady-state window: worker and sandbox CPU, resident memory above the
workers' baseline, fence counters (a re-grant would change one), the smallest
remaining lease TTL, and self-fencing in the worker logs.

Run: ``python -m tests.bench.bench_capacity`` (writes ``var/bench/capacity.json``);
``BENCH_PROFILE=1`` also samples worker 0 at the last step with py-spy.
"""

from __future__ import annotations

import os
import time

from shared import keys
from tests.bench.harness import (
    ProcStats,
    ProcTreeStats,
    activate,
    connected_owners,
    fences,
    min_lease_pttl_ms,
    profile,
    quick,
    redis_cpu_s,
    seed_connected,
    stack_env,
    start_redis,
    stop_stack,
    store_dir,
    write_result,
)
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Worker

STEPS = [int(s) for s in os.environ.get("BENCH_CAPACITY_STEPS", "").split(",") if s] or (
    [200, 500] if quick() else [1000, 2500, 5000]
)
WINDOW_S = 8.0 if quick() else 30.0
LEASE_TTL_S = 15.0
CONNECT_TIMEOUT_S = 60.0 if quick() else 90.0


def main() -> None:
    ids = [f"cap{i:05d}" for i in range(max(STEPS))]
    server, client = start_redis()
    store = store_dir()
    sandbox = SandboxProcess()
    workers: list[Worker] = []
    results = []
    try:
        seed_connected(client, sandbox, store, ids)
        sandbox.start(ready_timeout=60)
        env = stack_env(server.url, sandbox.url, store, LEASE_TTL_S=str(LEASE_TTL_S))
        workers = [Worker(f"cap{i}", env).start() for i in range(2)]
        for worker in workers:
            worker.wait_ready(client, timeout=60)
        time.sleep(2)
        # Each worker with its connection hosts: the hosts hold the sockets now.
        stats = [ProcTreeStats(w.proc.pid) for w in workers]  # type: ignore[union-attr]
        sandbox_stats = ProcStats(sandbox.proc.pid)  # type: ignore[union-attr]
        baseline_kb = [s.rss_kb() for s in stats]
        sandbox_base_kb = sandbox_stats.rss_kb()
        for step in STEPS:
            results.append(_step(client, ids[:step], workers, stats, sandbox_stats,
                                 baseline_kb, sandbox_base_kb))
            _print(results[-1])
            if not results[-1]["all_connected"]:
                break
        if os.environ.get("BENCH_PROFILE"):
            profile("capacity-worker", workers[0].proc.pid, WINDOW_S)  # type: ignore[union-attr]
    finally:
        stop_stack(workers, sandbox, server, client)
    write_result("capacity", {"lease_ttl_s": LEASE_TTL_S, "window_s": WINDOW_S,
                              "workers": 2, "steps": results})


def _step(client, ids, workers, stats, sandbox_stats, baseline_kb, sandbox_base_kb) -> dict:
    started = time.monotonic()
    cpu0 = [s.cpu_s() for s in stats]
    activate(client, ids)
    owners: dict[str, str] = {}
    progress = []
    while time.monotonic() - started < CONNECT_TIMEOUT_S:
        owners = connected_owners(client, ids)
        progress.append((round(time.monotonic() - started, 1), len(owners)))
        if len(owners) == len(ids):
            break
        time.sleep(1)
    connect_s = time.monotonic() - started
    missing = [t for t in ids if t not in owners]
    if missing:
        pipe = client.pipeline(transaction=False)
        for tenant in missing[:5]:
            pipe.hgetall(keys.session(tenant))
            pipe.get(keys.lease(tenant))
        print("not connected (first 5):", pipe.execute(), flush=True)
    connect_cpu = [s.cpu_s() - c for s, c in zip(stats, cpu0, strict=True)]
    time.sleep(2)  # let the last resumes' writes settle before the window
    fence_before = fences(client, ids)
    cpu_before = [s.cpu_s() for s in stats]
    sandbox_cpu_before = sandbox_stats.cpu_s()
    redis_before = redis_cpu_s(client)
    window_started = time.monotonic()
    min_ttl = LEASE_TTL_S * 1000
    while time.monotonic() - window_started < WINDOW_S:
        min_ttl = min(min_ttl, min_lease_pttl_ms(client, ids))
        time.sleep(0.5)
    elapsed = time.monotonic() - window_started
    cpu = [(s.cpu_s() - c) / elapsed for s, c in zip(stats, cpu_before, strict=True)]
    sandbox_cpu = (sandbox_stats.cpu_s() - sandbox_cpu_before) / elapsed
    redis_cpu = (redis_cpu_s(client) - redis_before) / elapsed
    regrants = sum(a != b for a, b in zip(fence_before, fences(client, ids), strict=True))
    final = connected_owners(client, ids)
    per_worker = {w.worker_id: sum(1 for o in final.values() if o == w.worker_id)
                  for w in workers}
    rss = [s.rss_kb() for s in stats]
    above_kb = sum(rss) - sum(baseline_kb)
    self_fenced = sum(w.log().count("self-fencing") for w in workers)
    return {
        "sessions": len(ids),
        "all_connected": len(owners) == len(ids),
        "connected_after_window": len(final),
        "per_worker": per_worker,
        "time_to_all_connected_s": round(connect_s, 1),
        "claim_cpu_s": [round(c, 2) for c in connect_cpu],
        "progress": progress,
        "steady_cpu_cores_per_worker": [round(c, 3) for c in cpu],
        "steady_cpu_cores_workers": round(sum(cpu), 3),
        "steady_cpu_cores_sandbox": round(sandbox_cpu, 3),
        "steady_cpu_cores_redis": round(redis_cpu, 3),
        "worker_rss_kb": rss,
        "worker_baseline_rss_kb": baseline_kb,
        "kb_per_session_above_baseline": round(above_kb / max(1, len(ids)), 1),
        "sandbox_kb_per_session": round((sandbox_stats.rss_kb() - sandbox_base_kb)
                                        / max(1, len(ids)), 1),
        "worker_threads": [s.threads() for s in stats],
        "connection_hosts": [s.hosts() for s in stats],
        "lease_regrants_in_window": regrants,
        "min_lease_ttl_left_ms": min_ttl,
        "self_fencing_log_lines": self_fenced,
    }


def _print(r: dict) -> None:
    print(f"{r['sessions']:>6} sessions: all connected={r['all_connected']} in "
          f"{r['time_to_all_connected_s']} s (per worker {list(r['per_worker'].values())}); "
          f"steady CPU workers {r['steady_cpu_cores_workers']} cores "
          f"(sandbox {r['steady_cpu_cores_sandbox']}, redis {r['steady_cpu_cores_redis']}); "
          f"{r['kb_per_session_above_baseline']} KB/session incl. hosts; hosts "
          f"{r['connection_hosts']}; threads {r['worker_threads']}; "
          f"re-grants {r['lease_regrants_in_window']}, min lease TTL left "
          f"{r['min_lease_ttl_left_ms']} ms, self-fencing {r['self_fencing_log_lines']}",
          flush=True)


if __name__ == "__main__":
    main()
