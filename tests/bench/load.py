"""Load generators for HTTP benchmarks on loopback.

``wrk`` (Debian's package; ``make bench`` installs it) measures closed-loop
throughput: it is C and uses little CPU, so the server is the bottleneck, not
the client. :func:`fixed_rate` sends requests on a fixed schedule from one
asyncio loop over keep-alive connections and measures each latency from the
time the request was *due*, so a slow server cannot hide its queueing
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from typing import Any

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, headers: dict[str, str], *, seconds: float, connections: int = 32,
        threads: int = 2) -> dict[str, float]:
    """Closed-loop run: requests/s and p50/p99 latency (ms) as wrk reports them."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True,
                         timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result = {"rps": rps}
    for name, pct in (("p50_ms", "50"), ("p99_ms", "99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[name] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    return result


def fixed_rate(host: str, port: int, path: str, headers: dict[str, str], *, rate: float,
               seconds: float, connections: int = 32) -> dict[str, Any]:
    """Send ``rate`` requests/s for ``seconds``; latencies measured from each due time."""
    return asyncio.run(_fixed_rate(host, port, path, headers, rate, seconds, connections))


async def _fixed_rate(host: str, port: int, path: str, headers: dict[str, str], rate: float,
                      seconds: float, connections: int) -> dict[str, Any]:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()

    async def one(due: float) -> None:
        conn = await idle.get()
        reader, writer = conn
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(loop.time() - due)
        status = int(status_line.split()[1])
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    start = loop.time() + 0.05
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    achieved = total / (loop.time() - start)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return {"latencies": latencies, "statuses": statuses, "achieved_rps": achieved,
            "wall": time.time()}
