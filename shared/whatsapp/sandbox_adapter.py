"""The sandbox adapter: a WhatsApp port client of the simulated network (``shared.sandbox``).

It behaves like whatsmeow where the worker can tell: QR rotation, a reconnect of
its own after the 515 that follows pairing, reconnects with backoff after a drop,
and never a reconnect after a final event. Device keys live only in the store
file, never in events or logs.

Over 300 lines: the session task, the process's one I/O loop it runs on and the
store file are one client of the sandbox's wire protocol, tested as one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import socket
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError, WhatsAppError
from shared.tenants import validate_tenant_id
from shared.whatsapp.port import EventKind, EventSink, WaEvent

log = logging.getLogger(__name__)

_MAGIC = b"WAPAIR-SANDBOX/1\n"
# Built once: json.dumps/json.loads look up their coder and sniff a bytes input's
# encoding on every call, and every send and receipt is a few lines each way.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode
_FINAL, _RECONNECT_NOW, _DROPPED = "final", "reconnect_now", "dropped"
_LINE_LIMIT = 1 << 20
DISPATCH_THREADS = 4
SEND_TIMEOUT_S = 8.0  # under the host call's 10 s, so the answer says why


class SandboxBackend:
    """Opens sandbox sessions; device keys live in ``{store_dir}/{tenant}.sandbox.json``."""

    name = "sandbox"

    def __init__(self, base_url: str, store_dir: str | os.PathLike[str], *,
                 ping_interval_s: float = 20.0, dial_timeout_s: float = 5.0,
                 backoff_first_s: float = 0.5, backoff_max_s: float = 5.0,
                 client_id: str = "") -> None:
        url = urlsplit(base_url)
        if not url.hostname or not url.port:
            raise ConfigError(f"sandbox URL needs a host and a port: {base_url!r}",
                              setting="WA_SANDBOX_URL")
        self.address = (url.hostname, url.port)
        self.store_dir = Path(store_dir)
        self.ping_interval_s = ping_interval_s
        self.dial_timeout_s = dial_timeout_s
        self.backoff = (backoff_first_s, backoff_max_s)
        # Who the sandbox logs as the client: the worker that owns the session, also
        # when a connection host holds the socket for it. Default: this process.
        self.client_id = client_id or f"{socket.gethostname()}:{os.getpid()}"

    def open_session(self, tenant: str, *, jid: str | None, on_event: EventSink,
                     may_connect: Callable[[], bool] | None = None,
                     lease_left: Callable[[], float | None] | None = None) -> SandboxSession:
        """Start a session for ``tenant`` (pair if ``jid`` is None) and return at once.

        ``may_connect`` is asked before every dial (on the I/O loop): False ends
        the session without dialling (the owner's lease may be gone).
        """
        self.store_path(tenant)  # validates the tenant id before anything starts
        session = SandboxSession(self, tenant, jid, on_event, may_connect)
        session._start()
        return session

    def store_path(self, tenant: str) -> Path:
        """Where the tenant's device keys are kept."""
        validate_tenant_id(tenant)  # InvalidInput: it becomes a file name
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

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None:
        """Remove the tenant's stored device keys (one file per tenant: ``jid`` is not needed)."""
        self.store_path(tenant).unlink(missing_ok=True)


class SandboxSession:
    """One tenant's connection to the sandbox: a task on the process's shared I/O loop."""

    def __init__(self, backend: SandboxBackend, tenant: str, jid: str | None,
                 on_event: EventSink, may_connect: Callable[[], bool] | None = None) -> None:
        self.backend = backend
        self._may_connect = may_connect
        self.tenant = tenant
        self.jid = jid
        self._on_event = on_event
        self._runtime = _Runtime.get()
        self._shard = self._runtime.shard_for(tenant)
        self._closed = threading.Event()  # close() was called
        self._done = threading.Event()  # CLOSED was handled: the session is over
        self._logout_answered = threading.Event()
        self._writer: asyncio.StreamWriter | None = None  # touched on the loop only
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        # A resume reaches the server before a close() can end it: the server then
        # replaces any older connection of the device (stream_replaced). A new owner's
        # take-over resume closed at once (a reset queued behind it) would otherwise
        # leave a paused old owner's connection live, and the pairing that follows
        # would put two devices of one account online (found by the chaos suite).
        self._announcing = jid is not None  # touched on the loop only
        # Sends waiting for the server's answer: ref -> (answered, [wa_message_id | error])
        self._sends: dict[str, tuple[threading.Event, list[tuple[str, str]]]] = {}
        self._send_refs = itertools.count(1)

    def _start(self) -> None:
        with _Runtime.lock:
            _Runtime.live += 1
        self._runtime.call(self._begin)

    def _begin(self) -> None:
        self._task = self._runtime.loop.create_task(self._main())
        # A done callback runs however the task ends, even cancelled before its first step.
        self._task.add_done_callback(self._finished)
        if self._closed.is_set():
            self._cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox session %s failed", self.tenant, exc_info=task.exception())
        self._emit(EventKind.CLOSED)

    # -- the port ----------------------------------------------------------

    def close(self) -> None:
        """Disconnect for good; the session emits CLOSED and ends. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._runtime.call(self._cancel)

    def _cancel(self) -> None:
        if self._task is None:
            return
        if self._announcing:  # ends once the server answered the hello; bounded all the same
            self._runtime.loop.call_later(2 * self.backend.dial_timeout_s, self._task.cancel)
            return
        self._task.cancel()

    def logout(self) -> None:
        """Unlink the device on the server, delete the store, and close."""
        if self._send({"op": "logout"}) and not self._runtime.on_own_thread():
            self._logout_answered.wait(2.0)
        self.backend.delete_store(self.tenant)
        self.close()

    def send_message(self, chat: str, content: dict[str, Any]) -> str:
        """Send a message and wait for the server's id for it (WhatsAppError if none)."""
        ref = str(next(self._send_refs))
        waiting: tuple[threading.Event, list[tuple[str, str]]] = (threading.Event(), [])
        self._sends[ref] = waiting
        try:
            frame = {"op": "send", "ref": ref, "chat": chat,
                     "client_ref": str(content.get("ref") or ""),
                     "content": {k: v for k, v in content.items() if k != "ref"}}
            if not self._connected or not self._send(frame):
                raise WhatsAppError("not connected")
            if not waiting[0].wait(SEND_TIMEOUT_S):
                raise WhatsAppError(f"no answer from the server in {SEND_TIMEOUT_S:.0f} s")
        finally:
            self._sends.pop(ref, None)
        outcome, value = waiting[1][0]
        if outcome != "ok":
            raise WhatsAppError(f"the server refused the message: {value}")
        return value

    def ack_inbound(self, ack: str) -> None:
        """The owner recorded a held message or receipt: the server may forget it."""
        self._send({"op": "ack", "key": ack})

    def request_pair_code(self, phone: str) -> None:
        """Ask the sandbox for a phone code; it arrives as PAIR_CODE (or CONNECT_FAILURE)."""
        if not self._send({"op": "pair_phone", "phone": phone}):
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_code",
                       message="no live connection to ask for a pair code")

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the session has ended (its CLOSED event handled); True if it has.

        From the adapter's own threads (an event handler) it does not wait: the
        CLOSED it would wait for may be queued behind the caller.
        """
        if self._runtime.on_own_thread():
            return self._done.is_set()
        return self._done.wait(timeout)

    # -- the session task (runs on the I/O loop) ---------------------------

    async def _main(self) -> None:
        mode = "pair" if self.jid is None else "resume"
        dialled, delay = False, 0.0
        while self._announcing or not self._closed.is_set():
            if delay:
                await asyncio.sleep(delay)
            hello = self._hello(mode)
            if hello is None:
                self._announcing = False
                self._emit(EventKind.LOGGED_OUT, reason="no_store", on_connect=True)
                return
            if self._may_connect is not None and not self._may_connect():
                self._announcing = False
                return  # the owner's lease may be gone: never dial
            try:
                async with asyncio.timeout(self.backend.dial_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        *self.backend.address, limit=_LINE_LIMIT)
            except (OSError, TimeoutError) as e:
                self._announcing = False
                if not dialled:
                    self._emit(EventKind.CONNECT_FAILURE, reason="dial",
                               message=str(e) or "timed out")
                    return
                delay = self._next_delay(delay)
                continue
            dialled = True
            outcome, reason = await self._converse(reader, writer, hello)
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
        client = self.backend.client_id
        if mode == "pair":
            return {"op": "hello", "tenant": self.tenant, "mode": "pair", "client": client}
        stored = self.backend.read_store(self.tenant)
        if stored is None or stored["jid"] != self.jid:
            return None
        return {"op": "hello", "tenant": self.tenant, "mode": "resume", "client": client,
                **stored}

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        hello: dict[str, Any]) -> tuple[str, str]:
        """Speak on one connection until it ends; returns (outcome, reason)."""
        self._writer = writer
        try:
            writer.write(_MAGIC + json.dumps(hello).encode() + b"\n")
            return await self._read_loop(reader)
        except (OSError, ValueError) as e:  # ValueError: a line over the limit
            return _DROPPED, f"socket error: {e}"
        finally:
            self._announcing = False
            self._writer = None
            writer.transport.abort()

    async def _read_loop(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        interval = self.backend.ping_interval_s
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval
        awaiting_pong, misses = False, 0
        while True:
            try:
                async with asyncio.timeout_at(next_ping):
                    line = await reader.readline()
            except TimeoutError:
                if awaiting_pong:
                    misses += 1
                    self._emit(EventKind.KEEPALIVE_TIMEOUT, error_count=misses)
                self._write({"op": "ping"})
                awaiting_pong, next_ping = True, loop.time() + interval
                continue
            self._announcing = False  # the server has answered the hello
            if self._closed.is_set():
                return _FINAL, "closed"
            if not line.endswith(b"\n"):
                return _DROPPED, "connection closed by server"
            try:
                message = _decode(line.decode())
            except ValueError:  # UnicodeDecodeError too
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
        elif ev in ("send_ack", "send_error"):
            waiting = self._sends.get(str(msg.get("ref")))
            if waiting is not None:
                waiting[1].append(("ok", str(msg["wa_message_id"])) if ev == "send_ack"
                                  else ("error", str(msg.get("message"))))
                waiting[0].set()
        elif ev == "message":
            fields = ("wa_message_id", "from", "chat", "text", "at", "ack")
            data: dict[str, Any] = {k: msg[k] for k in fields if k in msg}
            data["type"] = msg.get("kind", "text")
            self._runtime.dispatch(self._shard, self._deliver, WaEvent(EventKind.MESSAGE, data))
        elif ev == "receipt":
            self._emit(EventKind.RECEIPT, wa_message_id=msg["wa_message_id"],
                       status=msg["status"], at=msg["at"], ack=msg["ack"])
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
        """Send one line from any thread if a connection is open; False if there was none."""
        if self._writer is None:
            return False
        self._runtime.call(self._write, message)
        return True

    def _write(self, message: dict[str, Any]) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(_encode(message).encode() + b"\n")

    def _emit(self, kind: EventKind, **data: Any) -> None:
        """Hand an event to this session's dispatcher thread (in order, never blocking I/O)."""
        self._runtime.dispatch(self._shard, self._deliver, WaEvent(kind, data))

    def _deliver(self, event: WaEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("sandbox %s: event handler failed on %s", self.tenant,
                          event.kind.value)
        finally:
            if event.kind is EventKind.CLOSED:
                with _Runtime.lock:
                    _Runtime.live -= 1
                self._done.set()


class _Runtime:
    """The process's one I/O loop thread and its event dispatcher threads.

    Every sandbox session of the process is a task on one asyncio loop (a
    thread per session cost ~60 KB and a thread each; 5,000 sessions need
    neither). Events go to a few dispatcher threads, a tenant always to the
    same one, so each session's events keep their order and a handler that
    waits on Redis never stalls the sockets.
    """

    lock = threading.Lock()
    live = 0  # sessions whose CLOSED has not been handled yet
    _instance: _Runtime | None = None

    def __init__(self, dispatchers: int = DISPATCH_THREADS) -> None:
        self.loop = asyncio.new_event_loop()
        self._queues: list[queue.SimpleQueue[tuple[Callable[[WaEvent], None], WaEvent]]] = [
            queue.SimpleQueue() for _ in range(dispatchers)]
        self._threads = [threading.Thread(target=self.loop.run_forever, name="wa-sandbox-io",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._dispatch_loop, args=(q,),
                                           name=f"wa-sandbox-events-{i}", daemon=True)
                          for i, q in enumerate(self._queues)]
        self._idents: set[int] = set()
        for thread in self._threads:
            thread.start()
            assert thread.ident is not None
            self._idents.add(thread.ident)

    @classmethod
    def get(cls) -> _Runtime:
        """The process's runtime, started on first use."""
        with cls.lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def shard_for(self, tenant: str) -> int:
        return zlib.crc32(tenant.encode()) % len(self._queues)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, soon."""
        self.loop.call_soon_threadsafe(fn, *args)

    def dispatch(self, shard: int, fn: Callable[[WaEvent], None], event: WaEvent) -> None:
        self._queues[shard].put((fn, event))

    def on_own_thread(self) -> bool:
        return threading.get_ident() in self._idents

    @staticmethod
    def _dispatch_loop(q: queue.SimpleQueue[tuple[Callable[[WaEvent], None], WaEvent]]) -> None:
        while True:
            fn, event = q.get()
            fn(event)


def live_sessions() -> int:
    """How many sandbox sessions of this process have not ended yet (their CLOSED unhandled)."""
    with _Runtime.lock:
        return _Runtime.live
