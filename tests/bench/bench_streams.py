"""Event streams: 5,000 concurrent ``GET /api/whatsapp/events`` on one API started as the
Procfile starts it (2 workers, 4 threads, default settings), fan-out latency and memory.

50 tenants with 100 streams each (dashboards watching 50 tenants). Every round
changes the state of all 50 tenants at once (5,000 deliveries); a delivery's
fan-out latency is its arrival time minus the earliest arrival of the same event
on any stream (the goal: p99 within 50 ms of the first stream that sees it).
Memory per stream is the API workers' resident memory with the streams open
minus before, divided by the streams held. The clients are 2 asyncio processes
on the same 2 cores, each holding every stream of half the tenants (one process
reading 5,000 sockets took ~100 ms to walk one burst and measured itself: p99
80-130 ms); their own delays are still in the figures.

Run: ``python -m tests.bench.bench_streams`` (writes ``var/bench/streams.json``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import shlex
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from shared import keys
from shared.limits import raise_open_files_limit
from shared.state import SessionStore
from tests.bench.harness import (
    ProcStats,
    children,
    create_tenants,
    quick,
    size,
    start_redis,
    summary_ms,
    tree_cpu_s,
    write_result,
)
from tests.support.services import ROOT, Api

TENANTS = size(50, 10)
PER_TENANT = size(100, 50)
ROUNDS = size(10, 3)
OPEN_CONCURRENCY = 100
#: Client processes; each holds every stream of its share of the tenants.
CLIENTS = 2
_ID = re.compile(rb"^id: (\S+)$", re.M)


def procfile_api_argv(port: int) -> list[str]:
    """The Procfile's api command (after ``wapair wait-redis &&``, inside the supervisor's
    ``sh -c`` when there is one), bound to ``port``."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("api:"))
    words = shlex.split(line.split(":", 1)[1])
    if "sh" in words and words[words.index("sh") + 1] == "-c":
        words = shlex.split(words[words.index("sh") + 2])
    words = words[words.index("&&") + 1:] if "&&" in words else words
    words = [w for w in words if "=" not in w or w.startswith("-")]  # env assignments
    at = words.index("--bind")
    words[at + 1] = f"127.0.0.1:{port}"
    return [sys.executable, "-m", *words]


class Stream(asyncio.Protocol):
    """One SSE client on a bare protocol (little work per read): when each event id arrived."""

    def __init__(self, tenant: str, request: bytes) -> None:
        self.tenant = tenant
        self.request = request
        self.arrivals: dict[bytes, float] = {}
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.opened.is_set():
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(data[:200].decode(errors="replace"))
            self.opened.set()
        # An event is one write of the server, so its id line arrives in one read.
        for event_id in _ID.findall(data):
            self.arrivals[event_id] = now

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _client(port: int, api_keys: dict[str, str], pipe: Connection) -> None:
    """One client process: opens PER_TENANT streams per tenant, reports arrivals when asked."""
    loop = asyncio.get_running_loop()
    streams: list[Stream] = []
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(tenant: str) -> None:
        request = (f"GET /api/whatsapp/events HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\n"
                   f"Authorization: Bearer {api_keys[tenant]}\r\n\r\n").encode()
        async with gate:
            _, stream = await loop.create_connection(lambda: Stream(tenant, request),
                                                     "127.0.0.1", port)
            streams.append(stream)
            await asyncio.wait_for(stream.opened.wait(), 60)

    await asyncio.gather(*(open_one(t) for t in api_keys for _ in range(PER_TENANT)))
    pipe.send(len(streams))
    await loop.run_in_executor(None, pipe.recv)  # "collect"
    pipe.send({"held": sum(1 for s in streams if not s.closed.is_set()),
               "arrivals": [(s.tenant, s.arrivals) for s in streams]})
    for s in streams:
        if s.transport is not None:
            s.transport.close()


def _client_process(port: int, api_keys: dict[str, str], pipe: Connection) -> None:
    raise_open_files_limit()
    asyncio.run(_client(port, api_keys, pipe))


def _bench(port: int, api_keys: dict[str, str], change, worker_rss) -> dict:
    """Tenants are split over CLIENTS processes, each holding every stream of its tenants."""
    rss_before = worker_rss()
    names = sorted(api_keys)
    context = multiprocessing.get_context("fork")
    clients = []
    started = time.perf_counter()
    for i in range(CLIENTS):
        mine, theirs = context.Pipe()
        share = {t: api_keys[t] for t in names[i::CLIENTS]}
        proc = context.Process(target=_client_process, args=(port, share, theirs), daemon=True)
        proc.start()
        clients.append((proc, mine))
    opened = sum(pipe.recv() for _, pipe in clients)
    open_s = time.perf_counter() - started
    time.sleep(1)
    rss_open = worker_rss()
    rounds = []
    for r in range(ROUNDS):
        rounds += change("connected" if r % 2 == 0 else "reconnecting")
        time.sleep(1.0)
    for _, pipe in clients:
        pipe.send("collect")
    reports = [pipe.recv() for _, pipe in clients]
    for proc, _ in clients:
        proc.join(10)
    held = sum(x["held"] for x in reports)
    by_tenant: dict[str, list[dict[bytes, float]]] = {}
    for report in reports:
        for tenant, arrivals in report["arrivals"]:
            by_tenant.setdefault(tenant, []).append(arrivals)
    latencies: list[float] = []
    missing = 0
    for tenant, event_id in rounds:
        seen = [a[event_id] for a in by_tenant.get(tenant, []) if event_id in a]
        missing += PER_TENANT - len(seen)
        first = min(seen) if seen else 0.0
        latencies += [t - first for t in seen]
    return {
        "client_processes": CLIENTS,
        "streams_opened": opened, "streams_held": held, "open_s": round(open_s, 2),
        "deliveries": len(latencies), "deliveries_missing": missing,
        "fanout_ms": summary_ms(latencies) if latencies else {},
        "api_rss_kb_before": rss_before, "api_rss_kb_open": rss_open,
        "kb_per_stream": round((rss_open - rss_before) / max(1, held), 2),
    }


def main() -> None:
    raise_open_files_limit()
    server, client = start_redis()
    api: Api | None = None
    try:
        tenants = [f"streams-{i:03d}" for i in range(TENANTS)]
        api_keys = create_tenants(client, tenants)
        api = Api("streams-api", {"REDIS_URL": server.url, "PROMETHEUS_MULTIPROC_DIR":
                                  tempfile.mkdtemp(prefix="wapair-bench-prom-")})
        api.argv = procfile_api_argv(api.port)
        api.start().wait_ready()
        store = SessionStore(client)
        workers = children(api.proc.pid)

        def worker_rss() -> int:
            return sum(ProcStats(p).rss_kb() for p in workers)

        def change(state: str) -> list[tuple[str, bytes]]:
            for tenant in tenants:
                fence = int(client.incr(keys.fence(tenant)))
                store.fenced_write(tenant, fence, session={"state": state})
            return [(t, e.id.encode()) for t in tenants for e in _newest(client, t)]

        cpu0 = tree_cpu_s(api.proc.pid)
        result = _bench(api.port, api_keys, change, worker_rss)
        result["api_cpu_s"] = round(tree_cpu_s(api.proc.pid) - cpu0, 2)
        result["tenants"], result["per_tenant"], result["rounds"] = TENANTS, PER_TENANT, ROUNDS
        result["api_argv"] = " ".join(Path(a).name if a == sys.executable else a
                                      for a in api.argv)
    finally:
        if api is not None:
            api.stop()
        client.close()
        server.cleanup()
    _print(result)
    write_result("streams", result)


def _newest(client, tenant: str) -> list:
    from shared.events import EventLog

    return EventLog(client).history(tenant, 1)


def _print(r: dict) -> None:
    f = r["fanout_ms"]
    print(f"streams: {r['streams_held']} held of {r['streams_opened']} opened "
          f"({r['tenants']} tenants x {r['per_tenant']}) in {r['open_s']} s; quick={quick()}")
    print(f"fan-out after the first stream, {r['deliveries']} deliveries "
          f"({r['deliveries_missing']} missing): p50 {f.get('p50_ms')} ms, "
          f"p99 {f.get('p99_ms')} ms, max {f.get('max_ms')} ms")
    print(f"API workers' memory: {r['api_rss_kb_before']} KB before, {r['api_rss_kb_open']} KB "
          f"open: {r['kb_per_stream']} KB per stream; API CPU {r['api_cpu_s']} s")


if __name__ == "__main__":
    main()
