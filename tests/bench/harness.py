"""What every benchmark shares: quick mode, process stats, seeding, percentiles, results.

Benchmarks start their own processes (a private Redis, the sandbox, workers,
gunicorn) through ``tests.support``, bound their own run time and clean up.
``BENCH_QUICK=1`` shrinks every size so the whole ``make bench`` runs in a
minute or two.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from shared import keys
from shared.sandbox.records import account_for_tenant
from shared.tenants import hash_key
from tests.support.redis_proc import RedisProcess
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import children_of

OUT_DIR = Path(os.environ.get("BENCH_OUT", "var/bench"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def quick() -> bool:
    """True when ``BENCH_QUICK=1``: small sizes, same code paths."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def size(full: int, small: int) -> int:
    """``full`` normally, ``small`` in quick mode."""
    return small if quick() else full


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(statistics.median(seconds) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``var/bench/<name>.json`` (gitignored) and return its path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    data = {"quick": quick(), "nproc": os.cpu_count(), "at": time.time(), **data}
    path.write_text(json.dumps(data, indent=2))
    print(f"-> {path}")
    return path


class ProcStats:
    """CPU seconds (user+sys, all threads) and resident memory of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0


class ProcTreeStats(ProcStats):
    """A worker and its connection hosts (its children as they are now), summed.

    Memory is the sum of resident sets, so pages the processes share count once per
    process: an upper bound. CPU is what the live processes used; a host that died
    takes its CPU seconds with it, so compare windows in which no host ended.
    """

    def pids(self) -> list[int]:
        return [self.pid, *children_of(self.pid)]

    def hosts(self) -> int:
        return len(children_of(self.pid))

    def cpu_s(self) -> float:
        return sum(self._each(ProcStats.cpu_s))

    def rss_kb(self) -> int:
        return int(sum(self._each(ProcStats.rss_kb)))

    def threads(self) -> int:
        return int(sum(self._each(ProcStats.threads)))

    def _each(self, read: Callable[[ProcStats], float]) -> list[float]:
        out = []
        for pid in self.pids():
            try:
                out.append(read(ProcStats(pid)))
            except OSError:  # it ended between the listing and the read
                pass
        return out


def wait_for_event(client: redis.Redis, stream: str, last_id: bytes | str, deadline: float,
                   wanted: Callable[[dict[bytes, bytes]], bool], what: str) -> float:
    """Block on ``stream`` after ``last_id`` until an entry ``wanted`` accepts; returns
    ``time.perf_counter()`` when it came, or fails at ``deadline`` (a perf_counter time)."""
    while True:
        block_ms = int((deadline - time.perf_counter()) * 1000)
        reply = client.xread({stream: last_id}, block=block_ms) if block_ms > 0 else None
        if not reply:
            raise AssertionError(f"{what} did not come in time")
        entries = reply[0][1]
        last_id = entries[-1][0]
        if any(wanted(fields) for _, fields in entries):
            return time.perf_counter()


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def start_redis() -> tuple[RedisProcess, redis.Redis]:
    """A private Redis with the boot marker set (no grant freeze on a fresh server)."""
    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    client.set(keys.BOOT_MARKER, "1")
    return server, client


def stop_stack(workers: Iterable[Any], sandbox: SandboxProcess, server: RedisProcess,
               client: redis.Redis) -> None:
    """SIGKILL the workers still alive, then stop the sandbox and the private Redis."""
    for worker in workers:
        if worker.alive():
            worker.kill()
    sandbox.cleanup()
    client.close()
    server.cleanup()


def create_tenants(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    """Create tenants straight in Redis as ``TenantRegistry.create`` would; returns their keys."""
    api_keys = {}
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        api_key = f"wak_{secrets.token_urlsafe(32)}"
        api_keys[tenant] = api_key
        pipe.hset(keys.tenant_record(tenant), mapping={
            "id": tenant, "key_hash": hash_key(api_key), "domain": "",
            "created_at": f"{time.time():.3f}"})
        pipe.hset(keys.session(tenant), mapping={"state": "idle"})
        pipe.sadd(keys.TENANTS, tenant)
    pipe.execute()
    return api_keys


def seed_connected(client: redis.Redis, sandbox: SandboxProcess, store_dir: str,
                   ids: list[str]) -> dict[str, str]:
    """Make ``ids`` linked, connected tenants without pairing each through the phone.

    Writes the devices into the sandbox's ``--state`` file (start the sandbox
    after this), each tenant's device keys into the adapter's store, and the
    session hashes as ``connected`` with the device JID, as a worker that died
    would leave them; the tenants are not yet in ``wa:active`` (see
    :func:`activate`), so nothing claims them before the bench says so.
    """
    create_tenants(client, ids)
    devices, jids = [], {}
    store = Path(store_dir, "sandbox")
    store.mkdir(parents=True, exist_ok=True)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        account = account_for_tenant(tenant)
        jid, device_keys = f"{account}:1@s.whatsapp.net", secrets.token_hex(16)
        jids[tenant] = jid
        devices.append({"jid": jid, "account": account, "keys": device_keys,
                        "tenant": tenant, "paired_at": now})
        (store / f"{tenant}.sandbox.json").write_text(json.dumps({"jid": jid, "keys": device_keys}))
        pipe.hset(keys.session(tenant), mapping={"state": "connected", "device": jid,
                                                  "updated_at": f"{now:.3f}"})
    pipe.execute()
    accounts = {d["account"]: 1 for d in devices}
    Path(sandbox.state_path).write_text(json.dumps({"accounts": accounts, "devices": devices}))
    return jids


def activate(client: redis.Redis, ids: list[str]) -> None:
    """Put tenants in ``wa:active`` so the workers' claim scans find them."""
    for i in range(0, len(ids), 1000):
        client.sadd(keys.ACTIVE, *ids[i:i + 1000])


def connected_owners(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    """tenant -> owning worker id, for tenants whose state is connected and that hold a lease."""
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        pipe.hget(keys.session(tenant), "state")
        pipe.get(keys.lease(tenant))
    replies = pipe.execute()
    owners = {}
    for i, tenant in enumerate(ids):
        state, lease = replies[2 * i], replies[2 * i + 1]
        if state == b"connected" and lease:
            owners[tenant] = lease.decode().split("|", 1)[0]
    return owners


def fences(client: redis.Redis, ids: list[str]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        pipe.get(keys.fence(tenant))
    return [int(v or 0) for v in pipe.execute()]


def min_lease_pttl_ms(client: redis.Redis, ids: list[str]) -> int:
    """The smallest remaining lease TTL among ``ids`` (-2 if one has no lease)."""
    pipe = client.pipeline(transaction=False)
    for tenant in ids:
        pipe.pttl(keys.lease(tenant))
    return min(int(v) for v in pipe.execute())


def store_dir() -> str:
    return tempfile.mkdtemp(prefix="wapair-bench-store-")


def stack_env(redis_url: str, sandbox_url: str, store: str, **extra: str) -> dict[str, str]:
    """Worker/API environment for a bench stack."""
    return {"REDIS_URL": redis_url, "WA_BACKEND": "sandbox", "WA_SANDBOX_URL": sandbox_url,
            "WA_STORE": store, **extra}


class RoundTrips:
    """Counts a redis-py client's round trips: one per packed send (a pipeline is one).

    Swaps the pool's connection class before the client opens a connection, so
    every command or pipeline the client runs is counted where it is written.
    """

    def __init__(self, client: redis.Redis) -> None:
        counter = self
        self.count = 0
        base = client.connection_pool.connection_class

        class Counting(base):  # type: ignore[misc, valid-type]
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                counter.count += 1
                super().send_packed_command(command, check_health)

        client.connection_pool.disconnect()
        client.connection_pool.connection_class = Counting
        client.connection_pool.reset()  # drop connections made with the old class

    def take(self) -> int:
        """The count since the last take."""
        count, self.count = self.count, 0
        return count


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its direct children (gunicorn's master and workers)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += ProcStats(p).cpu_s()
        except OSError:
            pass
    return total


def profile(name: str, pid: int, seconds: float, *, gil: bool = False) -> Path | None:
    """Sample ``pid`` with py-spy (dev extra) for ``seconds``; prints the hottest frames.

    ``gil``: only the thread holding the GIL (where a process's Python CPU goes), not
    every thread that waits on a socket or a lock.

    Writes ``var/bench/<name>.pyspy.txt`` (collapsed stacks: flamegraph.pl or
    speedscope read it). Returns None if py-spy cannot attach here.
    """
    import shutil
    import subprocess
    import sys
    from collections import Counter

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{name}.pyspy.txt"
    done = subprocess.run([spy, "record", "--format", "raw", "--output", str(out),
                           "--duration", str(int(seconds)), "--rate", "100", "--pid", str(pid),
                           *(["--gil"] if gil else [])],
                          capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        print(f"py-spy could not sample {pid}: {done.stderr.strip()[:200]}")
        return None
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(count)
    print(f"py-spy {name}: {total} samples at 100 Hz over {seconds:g} s (busy threads only)")
    for frame, count in inclusive.most_common(25):
        print(f"  {100 * count / max(1, total):5.1f}%  {frame[:110]}")
    return out
