"""Design (a) vs (b) of DESIGN.md §4: what one delivered message costs a consumer.

Celery's Redis transport consumes by ``BRPOP q1 q2 ... qN``, re-issued for
every message. Under design (a) a worker owning N tenants consumes N queues;
under design (b) it consumes two (the claims queue and its own). This drains
the same 2,000 messages through BRPOP over N keys, on a private redis-server,
and prints the median time per message and the server's CPU per message.

Run: ``python -m tests.bench.bench_queue_design`` (prints figures, writes
``var/bench/queue_design.json``). Not part of ``make test``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import redis

from tests.bench.harness import size
from tests.support.redis_proc import RedisProcess

MESSAGES = size(2_000, 300)
ROUNDS = size(5, 3)


def drain_cost(client: redis.Redis, queues: list[str]) -> tuple[float, float]:
    """(seconds per message, Redis CPU seconds per message) for one round."""
    pipe = client.pipeline(transaction=False)
    for i in range(MESSAGES):
        pipe.lpush(random.choice(queues), f"m{i}")
    pipe.execute()
    cpu_before = _redis_cpu(client)
    started = time.perf_counter()
    for _ in range(MESSAGES):
        assert client.brpop(queues, timeout=1) is not None
    elapsed = time.perf_counter() - started
    return elapsed / MESSAGES, (_redis_cpu(client) - cpu_before) / MESSAGES


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    results = []
    try:
        for n in (2, 100, 1_000, 5_000):
            queues = [f"wa.tenant.t{i}" for i in range(n)]
            rounds = [drain_cost(client, queues) for _ in range(ROUNDS)]
            per_msg = statistics.median(r[0] for r in rounds)
            cpu = statistics.median(r[1] for r in rounds)
            results.append({"queues": n, "median_us_per_message": round(per_msg * 1e6, 1),
                            "redis_cpu_us_per_message": round(cpu * 1e6, 1)})
    finally:
        client.close()
        server.cleanup()
    base = results[0]["median_us_per_message"]
    print(f"{'queues consumed':>16} {'us/message':>11} {'ratio':>6} {'redis cpu us/msg':>17}")
    for r in results:
        ratio = r["median_us_per_message"] / base
        print(f"{r['queues']:>16} {r['median_us_per_message']:>11} {ratio:>6.1f} "
              f"{r['redis_cpu_us_per_message']:>17}")
    out = Path("var/bench/queue_design.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"messages": MESSAGES, "rounds": ROUNDS, "results": results},
                              indent=2))


if __name__ == "__main__":
    main()
