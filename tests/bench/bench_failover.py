"""Failover: kill -9 the owner of 1,000 connected sessions; time until all are connected elsewhere.

Tenants are seeded as in the capacity bench (devices in the sandbox's state
file, sessions ``connected`` in Redis). Worker A claims them all; then worker
B starts, A is killed with SIGKILL (its whole process group), and the bench
polls Redis every 50 ms for each tenant's state and lease: a tenant counts as
recovered when it is ``connected`` under B's lease. The sandbox's conflict log
must stay empty (the old connection always closed before the new one opened).

Run: ``python -m tests.bench.bench_failover`` (writes ``var/bench/failover.json``).
"""

from __future__ import annotations

import os
import time

import redis
import requests

from shared import keys
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

SESSIONS = int(os.environ.get("BENCH_FAILOVER_SESSIONS", size(1_000, 200)))
LEASE_TTL_S = float(os.environ.get("BENCH_FAILOVER_TTL_S", 5.0 if quick() else 15.0))


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
        # What each old lease had left once its holder was dead: the floor no
        # failover can beat without granting early.
        lapses = dict(zip(ids, _pttls_s(client, ids), strict=True))
        recovered: dict[str, float] = {}
        claimed: dict[str, float] = {}
        deadline = killed_at + LEASE_TTL_S + 60
        while len(recovered) < SESSIONS and time.monotonic() < deadline:
            now = time.monotonic() - killed_at
            for tenant, (state, owner) in _states(client, ids).items():
                if owner != second.worker_id:
                    continue
                claimed.setdefault(tenant, now)
                if state == "connected" and tenant not in recovered:
                    recovered[tenant] = now
            time.sleep(0.05)
        conflicts = requests.get(f"{sandbox.url}/conflicts", timeout=10).json()["conflicts"]
    finally:
        stop_stack(workers, sandbox, server, client)
    times = sorted(recovered.values())
    lapse = [lapses[t] for t in recovered]
    to_claim = [claimed[t] - lapses[t] for t in recovered]
    claim_to_connected = [recovered[t] - claimed[t] for t in recovered]
    goal = LEASE_TTL_S + 2
    result = {"sessions": SESSIONS, "lease_ttl_s": LEASE_TTL_S, "recovered": len(times),
              "goal_p99_s": goal, "conflicts": len(conflicts),
              "time_to_connected_elsewhere": summary_ms(times) if times else None,
              "first_s": round(times[0], 2) if times else None,
              "old_lease_left_at_kill": summary_ms(lapse) if lapse else None,
              "lease_lapsed_to_claimed": summary_ms(to_claim) if to_claim else None,
              "claimed_to_connected": summary_ms(claim_to_connected)
              if claim_to_connected else None}
    if times:
        t = result["time_to_connected_elsewhere"]
        print(f"kill -9 of the owner of {SESSIONS} sessions (LEASE_TTL_S={LEASE_TTL_S:g}): "
              f"{len(times)} connected elsewhere; first {times[0]:.2f} s, "
              f"p50 {t['p50_ms'] / 1000:.2f} s, p99 {t['p99_ms'] / 1000:.2f} s, "
              f"max {t['max_ms'] / 1000:.2f} s (goal p99 <= {goal:g} s); "
              f"conflicts {len(conflicts)}")
        for name in ("old_lease_left_at_kill", "lease_lapsed_to_claimed", "claimed_to_connected"):
            d = result[name]
            print(f"  {name.replace('_', ' ')}: p50 {d['p50_ms'] / 1000:.2f} s, "
                  f"p99 {d['p99_ms'] / 1000:.2f} s, max {d['max_ms'] / 1000:.2f} s")
    write_result("failover", result)


def _pttls_s(client: redis.Redis, ids: list[str]) -> list[float]:
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        pipe.pttl(keys.lease(tenant))
    return [max(0, ms) / 1000 for ms in pipe.execute()]


def _states(client: redis.Redis, ids: list[str]) -> dict[str, tuple[str, str]]:
    """tenant -> (session state, lease holder) for tenants that hold a lease."""
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        pipe.hget(keys.session(tenant), "state")
        pipe.get(keys.lease(tenant))
    replies = pipe.execute()
    return {tenant: ((state or b"").decode(), lease.decode().split("|", 1)[0])
            for tenant, state, lease in zip(ids, replies[::2], replies[1::2], strict=True)
            if lease}


def _wait(probe, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
