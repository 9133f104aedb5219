"""The connection host process: ``python -m workers.host.child --fd N``.

It holds WhatsApp clients for one worker and does only what the worker orders:
open, close, logout, ask for a pairing code, delete a store. Every client event
goes back to the worker as it happens. Three rules make the process the fence:

- **End-of-file is death.** When the worker's end of the socket closes (the
  worker exited, was killed, or killed us), the host exits at once with
  ``os._exit``: no graceful close that could hang, and the kernel closes every
  socket it held.
- **No session outlives its lease.** Each session carries the time after which
  the worker would have self-fenced it; when that time passes with no later one
  received (the worker is stopped, wedged or cannot renew), the host exits.
- **Nothing here decides.** No lease, no Redis, no state: a host that does the
  wrong thing can only drop connections, never make a second one.

Over 300 lines: the three rules below are enforced by one loop over one socket, and
each command handler must keep all three.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.limits import raise_open_files_limit
from shared.whatsapp.port import EventKind, WaEvent, WhatsAppBackend, WhatsAppSession
from workers.host.calls import CallThreads
from workers.host.protocol import SEND_TIMEOUT_S, STATS_INTERVAL_S, FrameWriter, read_frames

log = logging.getLogger("wapair.host")

EXIT_LEASE_PASSED = 75
WATCH_INTERVAL_S = 0.05


@dataclass
class _Held:
    """One client this host holds."""

    tenant: str
    handle: WhatsAppSession | None = None
    until: float | None = None  # CLOCK_MONOTONIC self-fence time; None: no lease to watch
    closing: bool = False


def build_adapter(config: dict[str, Any]) -> WhatsAppBackend:
    """The adapter a ``config`` frame names: ``sandbox`` or ``neonize``."""
    if config.get("backend") == "sandbox":
        from shared.whatsapp.sandbox_adapter import SandboxBackend

        return SandboxBackend(str(config["sandbox_url"]), str(config["store"]),
                              client_id=str(config.get("client_id") or ""))
    from shared.whatsapp.neonize_adapter import NeonizeBackend

    return NeonizeBackend(str(config["store"]), proxy=config.get("proxy") or None,
                          device_name=str(config.get("device_name") or "wapair"),
                          media_max_bytes=int(config.get("media_max_bytes") or 5_000_000))


class ConnectionHost:
    """The host's state: its clients, the socket to its worker, the watchdog."""

    def __init__(self, sock: socket.socket, adapter: WhatsAppBackend) -> None:
        self._sock = sock
        self._out = FrameWriter(sock, on_broken=_worker_unreachable)
        self._adapter = adapter
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._earliest: float | None = None  # min of the sessions' ``until``
        self._calls = CallThreads()
        self.opens = 0

    # --- orders -----------------------------------------------------------
    def serve(self, frames: Any) -> None:
        """Carry out the worker's orders until its socket closes."""
        for frame in frames:
            try:
                self._order(frame)
            except Exception:  # one bad order must not end every other session
                log.exception("host: order %s failed", frame.get("op"))

    def _order(self, frame: dict[str, Any]) -> None:
        op, sid = frame.get("op"), str(frame.get("sid", ""))
        if op == "open":
            self._open(sid, str(frame["tenant"]), frame.get("jid"), frame.get("until"))
        elif op == "until":
            self._extend({str(k): float(v) for k, v in frame["sids"].items()})
        elif op == "close":
            self._close(sid)
        elif op == "pair_code":
            handle = self._handle(sid)
            if handle is not None:
                handle.request_pair_code(str(frame["phone"]))
        elif op == "logout":
            self._answer(frame, lambda: self._logout(sid))
        elif op == "send":
            self._answer(frame, lambda: self._send(sid, str(frame["chat"]),
                                                   dict(frame["content"])))
        elif op == "ack":
            handle = self._handle(sid)
            if handle is not None:
                handle.ack_inbound(str(frame["ack"]))
        elif op == "delete_store":
            self._answer(frame, lambda: self._adapter.delete_store(
                str(frame["tenant"]), jid=frame.get("jid") or None))
        else:
            log.warning("host: unknown order %r", op)

    def _answer(self, frame: dict[str, Any], call: Any) -> None:
        """Run a call the worker waits on, off the order loop, and reply with its outcome."""
        def run() -> None:
            error, result = "", None
            try:
                result = call()
            except Exception as e:  # noqa: BLE001 - reported to the worker
                error = f"{type(e).__name__}: {e}"
            extra = result if isinstance(result, dict) else {}
            self._out.send({"op": "reply", **extra, "req": frame.get("req"), "error": error})

        self._calls.submit(run)

    def _open(self, sid: str, tenant: str, jid: str | None, until: float | None) -> None:
        if until is not None and time.monotonic() >= until:
            # The order waited past its window (the worker was slow to send it, or we
            # to read it): the owner would have fenced it by now. Never dial.
            self._out.send({"op": "event", "sid": sid, "kind": EventKind.CLOSED.value,
                            "data": {}})
            return
        held = _Held(tenant, until=until)
        with self._lock:
            self._held[sid] = held
            self._earliest = self._min_until()
        self.opens += 1
        handle = self._adapter.open_session(
            tenant, jid=jid, on_event=lambda ev: self._on_event(sid, ev),
            may_connect=lambda: self._may_connect(held))
        with self._lock:
            held.handle = handle
            closing = held.closing
        if closing:  # closed while opening
            handle.close()

    def _may_connect(self, held: _Held) -> bool:
        return not held.closing and (held.until is None or time.monotonic() < held.until)

    def _extend(self, untils: dict[str, float]) -> None:
        with self._lock:
            for sid, until in untils.items():
                held = self._held.get(sid)
                # A closing session keeps the time it had: if its close hangs past
                # it, the host exits rather than hold a socket nobody owns.
                if held is not None and not held.closing and until > (held.until or 0):
                    held.until = until
            self._earliest = self._min_until()

    def _min_until(self) -> float | None:
        values = [h.until for h in self._held.values() if h.until is not None]
        return min(values) if values else None

    def _close(self, sid: str) -> None:
        with self._lock:
            held = self._held.get(sid)
            if held is None:
                return
            held.closing = True
            handle = held.handle
        if handle is not None:
            handle.close()

    def _send(self, sid: str, chat: str, content: dict[str, Any]) -> dict[str, str]:
        handle = self._handle(sid)
        if handle is None:
            raise RuntimeError("no such session in this host")
        return {"wa_message_id": handle.send_message(chat, content)}

    def _logout(self, sid: str) -> None:
        handle = self._handle(sid)
        if handle is not None:
            handle.logout()

    def _handle(self, sid: str) -> WhatsAppSession | None:
        with self._lock:
            held = self._held.get(sid)
        return held.handle if held is not None else None

    # --- events -------------------------------------------------------------
    def _on_event(self, sid: str, event: WaEvent) -> None:
        self._out.send({"op": "event", "sid": sid, "kind": event.kind.value,
                        "data": _plain(event.data)})
        if event.kind is EventKind.CLOSED:
            with self._lock:
                self._held.pop(sid, None)
                self._earliest = self._min_until()

    # --- the watchdog -------------------------------------------------------
    def watch(self) -> None:
        """Exit when a session's lease window passes; send stats as the heartbeat."""
        next_stats = 0.0
        while True:
            now = time.monotonic()
            with self._lock:
                earliest = self._earliest
                overdue = [h.tenant for h in self._held.values()
                           if h.until is not None and now >= h.until] if (
                    earliest is not None and now >= earliest) else []
            if overdue:
                log.error("host %d: lease window of %d session(s) passed with no renewal "
                          "(tenants %s); exiting so no socket outlives its lease",
                          os.getpid(), len(overdue), ",".join(sorted(overdue)[:5]))
                os._exit(EXIT_LEASE_PASSED)
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL_S
                self._out.send({"op": "stats", **self.stats()})
            time.sleep(WATCH_INTERVAL_S)

    def stats(self) -> dict[str, int]:
        """What the worker bounds: descriptors, threads, memory, sessions, opens."""
        with self._lock:
            sessions = len(self._held)
        return {"fds": _count_fds(), "threads": _count_threads(), "rss_kb": _rss_kb(),
                "sessions": sessions, "opens": self.opens}


def _worker_unreachable() -> None:
    log.error("host %d: the worker does not read its socket; exiting", os.getpid())
    os._exit(0)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Event data as JSON can carry it (adapters send str, int, float, bool)."""
    return {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
            for k, v in data.items()}


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _proc_status(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def _count_threads() -> int:
    return _proc_status("Threads")


def _rss_kb() -> int:
    return _proc_status("VmRSS")


def _configure_logging(config: dict[str, Any]) -> None:
    from shared.config import load_settings
    from shared.logging_setup import configure_logging

    overrides = {k: config[k] for k in ("log_level", "log_format") if config.get(k)}
    configure_logging(load_settings(overrides, environ={}), role="host")


def main(argv: list[str] | None = None) -> int:
    """Serve one worker over the inherited socket ``--fd``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the worker's socket")
    args = parser.parse_args(argv)
    # Only end-of-file, a kill or a lease window ends a host: never the terminal's
    # Ctrl-C (the worker hands its sessions over first) nor an interpreter exit
    # held up by a library's non-daemon thread.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    # A send that cannot finish means the worker is not reading (stopped or
    # wedged): the watchdog must not wait on it, so sends time out (see FrameWriter).
    sock.settimeout(SEND_TIMEOUT_S)
    frames = read_frames(sock)
    config = next(frames, None)
    if config is None or config.get("op") != "config":
        return 2
    _configure_logging(config)
    raise_open_files_limit()
    host = ConnectionHost(sock, build_adapter(config))
    threading.Thread(target=host.watch, name="wa-host-watch", daemon=True).start()
    host._out.send({"op": "ready", "pid": os.getpid()})
    host.serve(frames)
    # The worker is gone: drop every socket now (a graceful close could hang).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
