"""Connection hosts: start time, memory of an empty host, and memory per session in a host.

For both adapters: the sandbox client (sessions connected to a real sandbox) and
real neonize (sessions dialling a local listener that never answers, so each
client stays alive with its Go goroutines and store open; no network is reached).
Figures are medians over ``RUNS`` starts and one fill of ``SESSIONS`` sessions.

Run: ``python -m tests.bench.bench_hosts`` (writes ``var/bench/hosts.json``).
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from typing import Any

from shared.whatsapp.port import EventKind
from tests.bench.harness import ProcStats, quick, write_result
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from workers.host.pool import HostLimits, HostPool

RUNS = 3 if quick() else 10
SESSIONS = 20 if quick() else 100


def _listener() -> tuple[socket.socket, str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def _config(kind: str, store: str, sandbox_url: str, proxy: str) -> dict[str, Any]:
    if kind == "sandbox":
        return {"backend": "sandbox", "sandbox_url": sandbox_url, "store": store,
                "log_level": "WARNING", "log_format": "text"}
    return {"backend": "neonize", "store": store, "proxy": proxy,
            "log_level": "WARNING", "log_format": "text"}


def _first_host_ready(pool: HostPool) -> Any:
    wait_for(lambda: pool.hosts() and pool.hosts()[0].get("rss_kb"), 30, "host stats")
    host = pool._hosts[0]
    wait_for(lambda: host.ready_at is not None, 30, "ready")
    return host


def measure(kind: str, sandbox_url: str, proxy: str) -> dict[str, Any]:
    starts, empty_kb = [], []
    for _ in range(RUNS):
        store = tempfile.mkdtemp(prefix=f"wapair-bench-{kind}-")
        began = time.monotonic()
        pool = HostPool(kind, _config(kind, store, sandbox_url, proxy),
                        HostLimits(sessions_per_host=SESSIONS + 10))
        try:
            host = _first_host_ready(pool)
            starts.append(host.ready_at - began)  # type: ignore[operator]
            empty_kb.append(ProcStats(host.pid).rss_kb())
        finally:
            pool.shutdown()
    store = tempfile.mkdtemp(prefix=f"wapair-bench-{kind}-")
    pool = HostPool(kind, _config(kind, store, sandbox_url, proxy),
                    HostLimits(sessions_per_host=SESSIONS + 10))
    try:
        wait_for(lambda: pool.hosts() and pool.hosts()[0].get("rss_kb"), 30, "host stats")
        pid = pool._hosts[0].pid
        # One session first: it loads what every session needs (the asyncio loop, Go's
        # runtime and store code), which is the host's cost, not a session's.
        first = threading.Event()
        pool.open_session("warm", jid=None, on_event=lambda e: e.kind is EventKind.QR
                          and first.set())
        time.sleep(3.0)
        one_kb = ProcStats(pid).rss_kb()
        for i in range(SESSIONS):
            pool.open_session(f"b{i:04d}", jid=None, on_event=lambda e: None)
        time.sleep(5.0)  # the clients are open (QR shown, or dialling the silent listener)
        full_kb = ProcStats(pid).rss_kb()
        threads = ProcStats(pid).threads()
    finally:
        pool.shutdown()
    return {"adapter": kind, "host_start_s_median": round(statistics.median(starts), 3),
            "host_start_s_max": round(max(starts), 3),
            "empty_host_rss_kb_median": int(statistics.median(empty_kb)),
            "host_with_one_session_rss_kb": one_kb, "sessions": SESSIONS,
            "kb_per_session": round((full_kb - one_kb) / SESSIONS, 1),
            "threads_with_sessions": threads}


def main() -> None:
    listener, proxy = _listener()
    results = []
    with SandboxProcess().start(qr_first_s=60) as sandbox:
        for kind in ("sandbox", "neonize"):
            r = measure(kind, sandbox.url, proxy)
            results.append(r)
            print(f"{kind:>8}: host start median {r['host_start_s_median']} s (max "
                  f"{r['host_start_s_max']}), empty host {r['empty_host_rss_kb_median']} KB, "
                  f"with one session {r['host_with_one_session_rss_kb']} KB, "
                  f"{r['kb_per_session']} KB per further session ({r['sessions']} sessions, "
                  f"{r['threads_with_sessions']} threads)", flush=True)
    listener.close()
    write_result("hosts", {"runs": RUNS, "results": results})


if __name__ == "__main__":
    main()
