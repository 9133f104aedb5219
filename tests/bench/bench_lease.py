"""Lease: acquire+release next to redis-py ``Lock``, and the renewal of 5,000 leases.

Both locks run against one private Redis in the same run, in alternating
blocks; the figure is the median of the blocks' time per acquire+release, and
the ratio is taken block by block. Round trips are counted on the client's
connections (a pipeline is one). The renewal is ``LeaseKeeper.renew_all()``
over 5,000 held leases, then the owner's mailbox check that follows it in
every maintenance round.

Run: ``python -m tests.bench.bench_lease`` (writes ``var/bench/lease.json``).
"""

from __future__ import annotations

import statistics
import time

import redis
from redis.lock import Lock

from shared import keys
from shared.lease import LeaseKeeper
from tests.bench.harness import RoundTrips, quick, redis_cpu_s, start_redis, write_result

BLOCKS = 10 if quick() else 30
PER_BLOCK = 100
LEASES = 1_000 if quick() else 5_000
RENEW_ROUNDS = 3 if quick() else 7


def main() -> None:
    server, client = start_redis()
    try:
        result = {"acquire_release": _acquire_release(server.url),
                  "renewal": _renewal(server.url, client)}
    finally:
        client.close()
        server.cleanup()
    a, r = result["acquire_release"], result["renewal"]
    print(f"acquire+release: lease {a['lease_us']} us, redis-py Lock {a['lock_us']} us, "
          f"ratio {a['ratio']} (median of {BLOCKS} paired blocks); round trips "
          f"{a['lease_round_trips']} vs {a['lock_round_trips']}")
    print(f"renew {r['leases']} leases: {r['renew_round_trips']} round trip(s), median "
          f"{r['renew_ms']} ms, Redis CPU {r['redis_cpu_ms']} ms; mailbox check "
          f"{r['mailbox_round_trips']} round trip(s), {r['mailbox_ms']} ms")
    write_result("lease", result)


def _acquire_release(url: str) -> dict[str, float]:
    lease_client, lock_client = redis.Redis.from_url(url), redis.Redis.from_url(url)
    keeper = LeaseKeeper(lease_client, "bench@lease", 15.0)
    lease_trips, lock_trips = RoundTrips(lease_client), RoundTrips(lock_client)

    def leases() -> None:
        for i in range(PER_BLOCK):
            tenant = f"l{i}"
            assert keeper.acquire(tenant).lease is not None
            assert keeper.release(tenant) == 1

    def locks() -> None:
        for i in range(PER_BLOCK):
            lock = Lock(lock_client, keys.lease(f"k{i}"), timeout=15.0, thread_local=False)
            assert lock.acquire(blocking=False)
            lock.release()

    leases(), locks()  # warm up: scripts loaded, connections open
    lease_trips.take(), lock_trips.take()
    lease_t, lock_t, ratios = [], [], []
    for b in range(BLOCKS):
        timed = {}
        for name, fn in ((("lease", leases), ("lock", locks)) if b % 2 == 0
                         else (("lock", locks), ("lease", leases))):
            started = time.perf_counter()
            fn()
            timed[name] = (time.perf_counter() - started) / PER_BLOCK
        lease_t.append(timed["lease"])
        lock_t.append(timed["lock"])
        ratios.append(timed["lease"] / timed["lock"])
    ops = BLOCKS * PER_BLOCK
    out = {"lease_us": round(statistics.median(lease_t) * 1e6, 1),
           "lock_us": round(statistics.median(lock_t) * 1e6, 1),
           "ratio": round(statistics.median(ratios), 3),
           "lease_round_trips": lease_trips.take() / ops,
           "lock_round_trips": lock_trips.take() / ops}
    lease_client.close()
    lock_client.close()
    return out


def _renewal(url: str, client: redis.Redis) -> dict[str, float]:
    worker = redis.Redis.from_url(url)
    keeper = LeaseKeeper(worker, "bench@renew", 15.0)
    tenants = [f"r{i:05d}" for i in range(LEASES)]
    for tenant in tenants:
        assert keeper.acquire(tenant).lease is not None
    trips = RoundTrips(worker)
    keeper.renew_all()  # first batch may load the script (NOSCRIPT path)
    trips.take()
    renew, cpu, renew_trips = [], [], []
    for _ in range(RENEW_ROUNDS):
        cpu0, started = redis_cpu_s(client), time.perf_counter()
        assert keeper.renew_all() == []
        renew.append(time.perf_counter() - started)
        cpu.append(redis_cpu_s(client) - cpu0)
        renew_trips.append(trips.take())
    mailbox = []
    for _ in range(RENEW_ROUNDS):
        started = time.perf_counter()
        pipe = worker.pipeline(transaction=False)
        for tenant in tenants:
            pipe.llen(keys.mailbox(tenant))
        pipe.execute()
        mailbox.append(time.perf_counter() - started)
    mailbox_trips = trips.take() / RENEW_ROUNDS
    worker.close()
    return {"leases": LEASES, "renew_round_trips": max(renew_trips),
            "renew_ms": round(statistics.median(renew) * 1000, 1),
            "redis_cpu_ms": round(statistics.median(cpu) * 1000, 1),
            "mailbox_round_trips": mailbox_trips,
            "mailbox_ms": round(statistics.median(mailbox) * 1000, 1)}


if __name__ == "__main__":
    main()
