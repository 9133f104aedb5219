"""Redis cost per tenant and per operation: the figures behind docs/scaling.md.

Runs the product's own classes (TenantRegistry, SessionStore, LeaseKeeper, the
cleanup sweep, the API's status reads) against a private redis-server, no
workers: what is measured is Redis, not Python. Memory is ``used_memory``
before and after a phase divided by the tenants it touched (idle, pairing,
connected), and ``MEMORY USAGE`` of one tenant's keys. CPU per operation is
Redis' own process CPU (``INFO cpu`` user + sys) over a run of that operation
divided by the count (reading, parsing and replying included: what saturates
a primary), next to the commands it ran (``INFO commandstats``). Each
operation runs in the batching the product uses: renewals in one pipeline per
worker, a status read as one packed round trip per request, one enqueue per
request, the claim scan's SMEMBERS of ``wa:active``, the sweep's six reads
per tenant.

Run: ``python -m tests.bench.bench_redis_cost`` (writes ``var/bench/redis_cost.json``);
``BENCH_QUICK=1`` for a small run. ``BENCH_REDIS_TENANTS`` sets the tenant count.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import Settings
from shared.lease import LeaseKeeper
from shared.redis_batch import read_batch
from shared.state import SessionStore
from shared.tenants import TenantRegistry
from tests.bench.harness import quick, redis_cpu_s, size, start_redis, write_result
from workers.cleanup import sweep

TENANTS = int(os.environ.get("BENCH_REDIS_TENANTS", "0")) or size(5000, 300)
REPEAT = size(5, 2)  # renewal batches and sweeps over all tenants
QR = json.dumps({"code": "2@" + "x" * 230, "index": 1, "expires_at": 1_700_000_020.0})
DEVICE = "628123456789:7@s.whatsapp.net"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def command_calls(client: redis.Redis) -> int:
    """Calls in INFO commandstats (those made inside scripts included), INFO excluded.

    Its ``usec`` is not summed: a script's time includes the commands it called,
    which are counted again under their own names.
    """
    return sum(int(stat["calls"]) for name, stat in client.info("commandstats").items()
               if name not in ("cmdstat_info", "cmdstat_config"))


def measure(client: redis.Redis, ops: int, run: Callable[[], None]) -> dict[str, float]:
    """Redis CPU (process) and command time per operation over ``run`` (``ops`` operations)."""
    client.config_resetstat()
    cpu0 = redis_cpu_s(client)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    cpu = redis_cpu_s(client) - cpu0
    calls = command_calls(client)
    return {"ops": ops, "redis_cpu_us_per_op": round(cpu * 1e6 / ops, 2),
            "commands_per_op": round(calls / ops, 2),
            "client_wall_us_per_op": round(wall * 1e6 / ops, 1)}


def tenant_keys(client: redis.Redis, tenant: str) -> dict[str, int]:
    found = {}
    for key in (keys.tenant_record(tenant), keys.session(tenant), keys.pairing(tenant),
                keys.qr(tenant), keys.lease(tenant), keys.fence(tenant), keys.events(tenant),
                keys.mailbox(tenant), keys.inflight(tenant)):
        usage = client.memory_usage(key, samples=0)
        if usage:
            found[key.split(":", 2)[2]] = int(usage)
    return found


def main() -> None:  # noqa: C901 - one linear script of phases; each phase is a few lines
    ids = [f"rc{i:07d}" for i in range(TENANTS)]
    server, client = start_redis()
    clock = ManualClock(wall=1_700_000_000.0)
    store = SessionStore(client, clock)
    registry = TenantRegistry(client)
    leases = LeaseKeeper(client, "bench-worker", 15, clock=clock)
    result: dict[str, Any] = {"tenants": TENANTS, "redis": client.info("server")["redis_version"]}
    ops: dict[str, dict[str, float]] = {}
    memory: dict[str, float] = {}
    try:
        base = used_memory(client)
        ops["create_tenant"] = measure(client, TENANTS, lambda: [registry.create(t) for t in ids])
        memory["idle_bytes_per_tenant"] = round((used_memory(client) - base) / TENANTS, 1)
        idle_keys = tenant_keys(client, ids[0])

        before = used_memory(client)
        ops["begin_pairing"] = measure(
            client, TENANTS, lambda: [store.begin_pairing(t, "qr", 160) for t in ids])
        taken: dict[str, Any] = {}

        def acquire_all() -> None:
            for t in ids:
                taken[t] = leases.acquire(t, also=store.take_over_read(t))

        leases.check_epoch()
        ops["acquire_with_take_over"] = measure(client, TENANTS, acquire_all)
        ops["fenced_write_qr"] = measure(client, TENANTS, lambda: [
            store.fenced_write(t, taken[t].lease.fence, pairing={"status": "qr"},
                               qr={"value": QR, "ttl_ms": 60000}) for t in ids])
        memory["pairing_bytes_per_tenant"] = round(
            (used_memory(client) - before) / TENANTS + memory["idle_bytes_per_tenant"], 1)
        pairing_keys = tenant_keys(client, ids[0])

        before = used_memory(client)
        ops["fenced_write_connected"] = measure(client, TENANTS, lambda: [
            store.fenced_write(t, taken[t].lease.fence,
                               session={"state": "connected", "device": DEVICE},
                               pairing={"status": "paired"}, qr="del") for t in ids])
        for t in ids:  # the pair command ran: done, as the owner's ack leaves it
            client.delete(keys.inflight(t))
        memory["connected_bytes_per_tenant"] = round(
            (used_memory(client) - before) / TENANTS + memory["pairing_bytes_per_tenant"], 1)
        connected_keys = tenant_keys(client, ids[0])

        ops["renew_per_lease"] = measure(
            client, TENANTS * REPEAT, lambda: [leases.renew_all() for _ in range(REPEAT)])
        status_reads = [registry.key_hash_command(t) for t in ids]
        ops["status_read"] = measure(client, TENANTS, lambda: [
            read_batch(client, [status_reads[i], *store.status_commands(t)])
            for i, t in enumerate(ids)])
        ops["enqueue_command"] = measure(
            client, TENANTS, lambda: [store.enqueue(t, "reset") for t in ids])
        for t in ids:
            client.delete(keys.mailbox(t))
        ops["heartbeat"] = measure(client, 200, lambda: [leases.heartbeat() for _ in range(200)])
        for t in ids:
            client.sadd(keys.ACTIVE, t)
        ops["claim_scan_smembers_per_member"] = measure(
            client, TENANTS * REPEAT,
            lambda: [client.smembers(keys.ACTIVE) for _ in range(REPEAT)])
        ops["claim_scan_pttl"] = measure(client, TENANTS, lambda: _pipelined_pttl(client, ids))
        settings = Settings()
        ops["cleanup_sweep_per_tenant"] = measure(
            client, TENANTS * REPEAT,
            lambda: [sweep(client, settings, clock) for _ in range(REPEAT)])

        # The events stream at its cap (EVENTS_MAXLEN, 1000): a long-lived tenant's size.
        probe = ids[0]
        event = json.dumps({"state": "connected", "previous": "reconnecting", "pairing_id":
                            "p_0123456789abcdef", "device": DEVICE, "error": None})
        pipe = client.pipeline(transaction=False)
        for _ in range(settings.events_maxlen):
            pipe.xadd(keys.events(probe), {"kind": "state", "data": event, "at": "1700000000.000"},
                      maxlen=settings.events_maxlen, approximate=True)
        pipe.execute()
        memory["events_stream_at_cap_bytes"] = int(client.memory_usage(keys.events(probe)))
        result.update(ops=ops, memory=memory, keys_idle=idle_keys, keys_pairing=pairing_keys,
                      keys_connected=connected_keys,
                      used_memory_total=used_memory(client))
    finally:
        client.close()
        server.cleanup()
    print(f"Redis cost, {TENANTS} tenants (Redis {result['redis']}), quick={quick()}")
    for name, figure in memory.items():
        print(f"  memory {name:32s} {figure:>10}")
    print(f"  {'operation':38s} {'Redis CPU us/op':>16} {'cmds/op':>8}")
    for name, o in ops.items():
        print(f"  {name:38s} {o['redis_cpu_us_per_op']:>16} {o['commands_per_op']:>8}")
    print(f"  keys of a connected tenant (bytes): {result.get('keys_connected')}")
    if ops:
        result["model"] = capacity_model(ops)
        m = result["model"]
        print(f"  model (defaults; {m['assumptions']}):")
        print(f"    per connected tenant {m['connected_fixed_us_per_s']} us/s + "
              f"{m['connected_per_worker_us_per_s']} us/s per worker; idle "
              f"{m['idle_us_per_s']} us/s")
        print(f"    connected tenants one primary holds at {BUDGET_US_PER_S / 1e6:.0%} of a core: "
              f"{m['connected_per_primary']:,} (claim scan as now), "
              f"{m['connected_per_primary_without_scan']:,} (without its per-worker term)")
    write_result("redis_cost", result)


#: Redis CPU a primary may spend in steady state (µs per s): half a core, leaving
#: room for the re-grant burst after a failover, AOF rewrites and client spikes.
BUDGET_US_PER_S = 500_000.0
SESSIONS_PER_WORKER = 2500  # the planning figure of docs/scaling.md
STATUS_READS_PER_TENANT_S = 1 / 60  # an assumption: one status read a minute


def capacity_model(ops: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Steady-state Redis CPU per tenant at the default settings, and the tenants a
    primary holds within BUDGET_US_PER_S (docs/scaling.md explains each term)."""
    s = Settings()
    cpu = {name: o["redis_cpu_us_per_op"] for name, o in ops.items()}
    sweep_term = cpu["cleanup_sweep_per_tenant"] / s.cleanup_interval_s
    fixed = (cpu["renew_per_lease"] / (s.lease_ttl_s / 3) + sweep_term
             + cpu["status_read"] * STATUS_READS_PER_TENANT_S)
    # Every worker reads all of wa:active each claim interval, and PTTLs each tenant
    # another worker holds about once per TTL.
    per_worker = (cpu["claim_scan_smembers_per_member"] / s.claim_interval_s
                  + cpu["claim_scan_pttl"] / s.lease_ttl_s)
    quadratic = per_worker / SESSIONS_PER_WORKER  # workers grow with the tenants
    n = (-fixed + (fixed ** 2 + 4 * quadratic * BUDGET_US_PER_S) ** 0.5) / (2 * quadratic)
    return {
        "assumptions": f"TTL {s.lease_ttl_s:g} s, claim {s.claim_interval_s:g} s, cleanup "
                       f"{s.cleanup_interval_s:g} s, {SESSIONS_PER_WORKER} per worker, "
                       f"1 status read/min",
        "connected_fixed_us_per_s": round(fixed, 2),
        "connected_per_worker_us_per_s": round(per_worker, 3),
        "idle_us_per_s": round(sweep_term, 2),
        "connected_per_primary": int(n),
        "connected_per_primary_without_scan": int(BUDGET_US_PER_S / fixed),
    }


def _pipelined_pttl(client: redis.Redis, ids: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for t in ids:
        pipe.pttl(keys.lease(t))
    pipe.execute()


if __name__ == "__main__":
    main()
