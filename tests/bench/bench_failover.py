"""Failover: kill -9 the owner of 1,000 connected sessions; time until all are connected elsewhere.

Tenants are seeded as in the capacity bench (devices in the sandbox's state
file, sessions ``connected`` in Redis). Worker A claims them all; then worker
B starts, A is killed with SIGKILL (its whole process group), and the bench
polls Redis every 100 ms for each tenant's state and lease: a tenant counts as
recovered when it is ``connected`` under B's lease. The sandbox's conflict log
must stay empty (the old connection always closed before the new one opened).

Run: ``python -m tests.bench.bench_failover`` (writes ``var/bench/failover.json``).
"""

from __future__ import annotations

import time

import requests

from tests.bench.harness import (
    activate,
    connected_owners,
    quick,
    seed_connected,
    size,
    stack_env,
    start_redis,
    stop_stack,
    store_dir,
    summary_ms,
    write_result,
)
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Worker

SESSIONS = size(1_000, 200)
LEASE_TTL_S = 5.0 if quick() else 15.0


def main() -> None:
    ids = [f"fo{i:05d}" for i in range(SESSIONS)]
    server, client = start_redis()
    store = store_dir()
    sandbox = SandboxProcess()
    workers: list[Worker] = []
    try:
        seed_connected(client, sandbox, store, ids)
        sandbox.start(ready_timeout=60)
        env = stack_env(server.url, sandbox.url, store, LEASE_TTL_S=str(LEASE_TTL_S))
        first = Worker("fo-a", env).start()
        workers.append(first)
        first.wait_ready(client, timeout=60)
        activate(client, ids)
        _wait(lambda: len(connected_owners(client, ids)) == SESSIONS, 120, "A to connect all")
        second = Worker("fo-b", env).start()
        workers.append(second)
        second.wait_ready(client, timeout=60)
        killed_at = time.monotonic()
        first.kill()
        recovered: dict[str, float] = {}
        deadline = killed_at + LEASE_TTL_S + 60
        while len(recovered) < SESSIONS and time.monotonic() < deadline:
            now = time.monotonic() - killed_at
            for tenant, owner in connected_owners(client, ids).items():
                if owner == second.worker_id and tenant not in recovered:
                    recovered[tenant] = now
            time.sleep(0.1)
        conflicts = requests.get(f"{sandbox.url}/conflicts", timeout=10).json()["conflicts"]
    finally:
        stop_stack(workers, sandbox, server, client)
    times = sorted(recovered.values())
    result = {"sessions": SESSIONS, "lease_ttl_s": LEASE_TTL_S, "recovered": len(times),
              "goal_p99_s": LEASE_TTL_S + 5, "conflicts": len(conflicts),
              "time_to_connected_elsewhere": summary_ms(times) if times else None,
              "first_s": round(times[0], 2) if times else None}
    if times:
        t = result["time_to_connected_elsewhere"]
        print(f"kill -9 of the owner of {SESSIONS} sessions (LEASE_TTL_S={LEASE_TTL_S:g}): "
              f"{len(times)} connected elsewhere; first {times[0]:.2f} s, "
              f"p50 {t['p50_ms'] / 1000:.2f} s, p99 {t['p99_ms'] / 1000:.2f} s, "
              f"max {t['max_ms'] / 1000:.2f} s (goal p99 <= {LEASE_TTL_S + 5:g} s); "
              f"conflicts {len(conflicts)}")
    write_result("failover", result)


def _wait(probe, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
