"""What one scrape of the API's Redis gauges costs, by number of tenants.

``GET /metrics`` reads every tenant's state, device, lease and mailbox length in
one pipelined round trip (shared/metrics_exposition.py). This times that read
and the Redis CPU it takes for 100 to 10,000 tenants on a private redis-server.

Run: ``python -m tests.bench.bench_metrics_scrape``. Not part of ``make test``.
"""

from __future__ import annotations

import statistics
import time

import redis
from prometheus_client import CollectorRegistry, generate_latest

from shared import keys
from shared.metrics_exposition import RedisStateCollector
from tests.support.redis_proc import RedisProcess

ROUNDS = 5


def populate(client: redis.Redis, start: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    states = ("connected", "idle", "pairing", "reconnecting")
    for i in range(start, start + count):
        tenant = f"t{i:05d}"
        pipe.sadd(keys.TENANTS, tenant)
        pipe.hset(keys.session(tenant), mapping={"state": states[i % 4], "device": f"{i}:1@s"})
        if i % 4 != 1:
            pipe.set(keys.lease(tenant), "w1|tok", px=600_000)
        if i % 50 == 0:
            pipe.rpush(keys.mailbox(tenant), "cmd")
    pipe.execute()


def scrape_cost(client: redis.Redis) -> tuple[float, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisStateCollector(client))
    cpu_before = redis_cpu(client)
    started = time.perf_counter()
    generate_latest(registry)
    elapsed = time.perf_counter() - started
    return elapsed, redis_cpu(client) - cpu_before


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    try:
        have = 0
        print("| tenants | scrape (ms, median of 5) | Redis CPU (ms) |")
        print("|---:|---:|---:|")
        for tenants in (100, 1_000, 5_000, 10_000):
            populate(client, have, tenants - have)
            have = tenants
            runs = [scrape_cost(client) for _ in range(ROUNDS)]
            wall = statistics.median(r[0] for r in runs) * 1000
            cpu = statistics.median(r[1] for r in runs) * 1000
            print(f"| {tenants:,} | {wall:.1f} | {cpu:.1f} |")
    finally:
        client.close()
        server.cleanup()


if __name__ == "__main__":
    main()
