"""The sandbox adapter: a WhatsApp port client of the simulated network (``shared.sandbox``).

It behaves like whatsmeow where the worker can tell: QR rotation, a reconnect of
its own after the 515 that follows pairing, reconnects with backoff after a drop,
and never a reconnect after a final event. Device keys live only in the store
file, never in events or logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.whatsapp.port import EventKind, EventSink, WaEvent

log = logging.getLogger(__name__)

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MAGIC = b"WAPAIR-SANDBOX/1\n"
_FINAL, _RECONNECT_NOW, _DROPPED = "final", "reconnect_now", "dropped"


class SandboxBackend:
    """Opens sandbox sessions; device keys live in ``{store_dir}/{tenant}.sandbox.json``."""

    name = "sandbox"

    def __init__(self, base_url: str, store_dir: str | os.PathLike[str], *,
                 ping_interval_s: float = 20.0, dial_timeout_s: float = 5.0,
                 backoff_first_s: float = 0.5, backoff_max_s: float = 5.0) -> None:
        url = urlsplit(base_url)
        if not url.hostname or not url.port:
            raise ValueError(f"sandbox URL needs a host and a port: {base_url!r}")
        self.address = (url.hostname, url.port)
        self.store_dir = Path(store_dir)
        self.ping_interval_s = ping_interval_s
        self.dial_timeout_s = dial_timeout_s
        self.backoff = (backoff_first_s, backoff_max_s)

    def open_session(self, tenant: str, *, jid: str | None, on_event: EventSink,
                     may_connect: Callable[[], bool] | None = None) -> SandboxSession:
        """Start a session thread for ``tenant`` (pair if ``jid`` is None) and return at once."""
        self.store_path(tenant)  # validates the tenant id before a thread exists
        session = SandboxSession(self, tenant, jid, on_event, may_connect)
        session.thread.start()
        return session

    def store_path(self, tenant: str) -> Path:
        """Where the tenant's device keys are kept."""
        if not _TENANT.fullmatch(tenant):
            raise ValueError(f"invalid tenant id: {tenant!r}")
        return self.store_dir / f"{tenant}.sandbox.json"

    def read_store(self, tenant: str) -> dict[str, str] | None:
        """The tenant's ``{"jid", "keys"}``, or None if absent or unreadable."""
        try:
            data = json.loads(self.store_path(tenant).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("jid", "keys"))
        return data if ok else None

    def write_store(self, tenant: str, jid: str, keys: str) -> None:
        """Save the device keys atomically, readable by the owner only."""
        path = self.store_path(tenant)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.store_dir, prefix=f".{tenant}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                json.dump({"jid": jid, "keys": keys}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete_store(self, tenant: str) -> None:
        """Remove the tenant's stored device keys."""
        self.store_path(tenant).unlink(missing_ok=True)


class SandboxSession:
    """One tenant's connection to the sandbox, run by its own thread."""

    def __init__(self, backend: SandboxBackend, tenant: str, jid: str | None,
                 on_event: EventSink, may_connect: Callable[[], bool] | None = None) -> None:
        self.backend = backend
        self._may_connect = may_connect
        self.tenant = tenant
        self.jid = jid
        self._on_event = on_event
        self._closed = threading.Event()
        self._logout_answered = threading.Event()
        self._lock = threading.Lock()  # guards _sock and sends from other threads
        self._sock: socket.socket | None = None
        self._connected = False
        # daemon: a session a caller forgot to close must not keep a dying worker alive
        self.thread = threading.Thread(target=self._run, name=f"wa-sandbox-{tenant}",
                                       daemon=True)

    # -- the port ----------------------------------------------------------

    def close(self) -> None:
        """Disconnect for good; the thread emits CLOSED and ends. Idempotent."""
        self._closed.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv
                except OSError:
                    pass

    def logout(self) -> None:
        """Unlink the device on the server, delete the store, and close."""
        if self._send({"op": "logout"}) and threading.current_thread() is not self.thread:
            self._logout_answered.wait(2.0)
        self.backend.delete_store(self.tenant)
        self.close()

    def request_pair_code(self, phone: str) -> None:
        """Ask the sandbox for a phone code; it arrives as PAIR_CODE (or CONNECT_FAILURE)."""
        if not self._send({"op": "pair_phone", "phone": phone}):
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_code",
                       message="no live connection to ask for a pair code")

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the session thread has ended; True if it has."""
        if threading.current_thread() is self.thread:
            return False
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # -- the session thread ------------------------------------------------

    def _run(self) -> None:
        try:
            self._main()
        except Exception:
            log.exception("sandbox session %s failed", self.tenant)
        finally:
            self._emit(EventKind.CLOSED)

    def _main(self) -> None:
        mode = "pair" if self.jid is None else "resume"
        dialled, delay = False, 0.0
        while not self._closed.is_set():
            if delay and self._closed.wait(delay):
                return
            hello = self._hello(mode)
            if hello is None:
                self._emit(EventKind.LOGGED_OUT, reason="no_store", on_connect=True)
                return
            if self._may_connect is not None and not self._may_connect():
                return  # the owner's lease may be gone: never dial
            try:
                sock = socket.create_connection(self.backend.address,
                                                timeout=self.backend.dial_timeout_s)
            except OSError as e:
                if not dialled:
                    self._emit(EventKind.CONNECT_FAILURE, reason="dial", message=str(e))
                    return
                delay = self._next_delay(delay)
                continue
            dialled = True
            outcome, reason = self._converse(sock, hello)
            if outcome == _FINAL or self._closed.is_set():
                return
            if outcome == _RECONNECT_NOW:
                mode, delay = "resume", 0.0
                continue
            if self._connected or mode == "pair":
                self._connected = False
                self._emit(EventKind.DISCONNECTED, reason=reason)
            if mode == "pair":  # a pairing cannot be resumed: the worker starts a new one
                return
            delay = self._next_delay(delay)

    def _next_delay(self, delay: float) -> float:
        first, most = self.backend.backoff
        return first if delay <= 0 else min(delay * 2, most)

    def _hello(self, mode: str) -> dict[str, Any] | None:
        # "client" (host:pid) is logged by the sandbox so checkers can tell owners apart.
        client = f"{socket.gethostname()}:{os.getpid()}"
        if mode == "pair":
            return {"op": "hello", "tenant": self.tenant, "mode": "pair", "client": client}
        stored = self.backend.read_store(self.tenant)
        if stored is None or stored["jid"] != self.jid:
            return None
        return {"op": "hello", "tenant": self.tenant, "mode": "resume", "client": client,
                **stored}

    def _converse(self, sock: socket.socket, hello: dict[str, Any]) -> tuple[str, str]:
        """Speak on one socket until it ends; returns (outcome, reason)."""
        with self._lock:
            self._sock = sock
        try:
            if self._closed.is_set():
                return _FINAL, "closed"
            sock.sendall(_MAGIC + json.dumps(hello).encode() + b"\n")
            return self._read_loop(sock)
        except OSError as e:
            return _DROPPED, f"socket error: {e}"
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def _read_loop(self, sock: socket.socket) -> tuple[str, str]:
        interval = self.backend.ping_interval_s
        next_ping = time.monotonic() + interval
        awaiting_pong, misses = False, 0
        buffer = b""
        while True:
            sock.settimeout(max(0.01, next_ping - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if awaiting_pong:
                    misses += 1
                    self._emit(EventKind.KEEPALIVE_TIMEOUT, error_count=misses)
                self._send({"op": "ping"})
                awaiting_pong, next_ping = True, time.monotonic() + interval
                continue
            if self._closed.is_set():
                return _FINAL, "closed"
            if not chunk:
                return _DROPPED, "connection closed by server"
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("sandbox %s: unreadable line from server", self.tenant)
                    continue
                if message.get("ev") == "pong":
                    awaiting_pong = False
                    if misses:
                        misses = 0
                        self._emit(EventKind.KEEPALIVE_RESTORED)
                    continue
                result = self._on_message(message)
                if result is not None:
                    return result

    def _on_message(self, msg: dict[str, Any]) -> tuple[str, str] | None:
        """Turn one server message into port events; a return value ends the socket."""
        ev = msg.get("ev")
        if ev == "qr":
            self._emit(EventKind.QR, code=msg["code"], expires_in=float(msg["expires_in"]),
                       index=int(msg["index"]))
        elif ev == "pair_code":
            self._emit(EventKind.PAIR_CODE, code=msg["code"])
        elif ev == "pair_code_error":
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_code",
                       message=str(msg.get("message", "pair code refused")))
        elif ev == "pair_success":
            self.backend.write_store(self.tenant, msg["jid"], msg["keys"])
            self.jid = msg["jid"]
            self._emit(EventKind.PAIR_SUCCESS, jid=msg["jid"], platform=msg.get("platform", ""),
                       business_name=msg.get("business_name", ""))
        elif ev == "stream_error":
            if msg.get("code") == 515:
                return _RECONNECT_NOW, "515"
            return _DROPPED, f"stream_error {msg.get('code')}"
        elif ev == "connected":
            self._connected = True
            self._emit(EventKind.CONNECTED, jid=msg["jid"])
        elif ev == "logged_out":
            log.info("sandbox %s: logged out (%s)", self.tenant, msg.get("detail", msg["reason"]))
            if msg.get("detail") in ("device_removed", "unlinked"):
                self.backend.delete_store(self.tenant)
            self._logout_answered.set()
            self._emit(EventKind.LOGGED_OUT, reason=msg["reason"],
                       on_connect=bool(msg.get("on_connect")), detail=msg.get("detail", ""))
            return _FINAL, "logged_out"
        elif ev == "stream_replaced":
            self._emit(EventKind.STREAM_REPLACED)
            return _FINAL, "stream_replaced"
        elif ev == "temporary_ban":
            self._emit(EventKind.TEMPORARY_BAN, code=int(msg["code"]),
                       expire_s=float(msg["expire_s"]))
            return _FINAL, "temporary_ban"
        elif ev == "pairing_timeout":
            self._emit(EventKind.PAIRING_TIMEOUT)
            return _FINAL, "pairing_timeout"
        else:
            log.warning("sandbox %s: unexpected message %r", self.tenant, ev)
        return None

    def _send(self, message: dict[str, Any]) -> bool:
        """Send one line if a socket is open; False if there was none or it failed."""
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendall(json.dumps(message).encode() + b"\n")
            except OSError:
                return False
            return True

    def _emit(self, kind: EventKind, **data: Any) -> None:
        try:
            self._on_event(WaEvent(kind, data))
        except Exception:
            log.exception("sandbox %s: event handler failed on %s", self.tenant, kind.value)
