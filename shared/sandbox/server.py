"""The sandbox's I/O: one TCP port for the wire protocol and a tiny HTTP/1.1 JSON API.

A wire client's first line is ``WAPAIR-SANDBOX/1``; any other first line is read
as an HTTP request line. All model calls run on the event loop's thread, so the
model needs no locks.

Over 300 lines: the wire protocol and the HTTP API drive the same ``Network`` on the
same loop thread, which is what keeps the model free of locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.sandbox.network import Network, Outgoing, SandboxError

log = logging.getLogger(__name__)

MAGIC = b"WAPAIR-SANDBOX/1"
MAX_BODY = 64 * 1024
# The state file is rewritten at most this often (and on stop): a snapshot of
# thousands of devices on every change made connection storms quadratic.
SAVE_INTERVAL_S = 1.0
# Thousands of clients dial at once after a failover; the default backlog (100)
# dropped their SYNs until the adapters' dial timeout.
LISTEN_BACKLOG = 4096
# A wire line carries a whole message, media in base64 included.
WIRE_LINE_LIMIT = 16 << 20


class HttpError(Exception):
    """Raised when an HTTP request is malformed or names an unknown thing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Link:
    """The outgoing side of one wire connection: a queue drained by one writer task."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class SandboxServer:
    """Serves one :class:`Network` on one TCP port."""

    def __init__(self, network: Network, state_path: str | None = None) -> None:
        self.network = network
        self.state_path = state_path
        self._links: dict[int, _Link] = {}
        self._wake = asyncio.Event()
        self._saved_version = -1
        self._saved_at = float("-inf")
        self._seen_version = -1
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        if state_path and os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as f:
                network.restore(json.load(f))

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen and start the timer task; returns the bound address."""
        self._server = await asyncio.start_server(self._handle, host, port,
                                                  backlog=LISTEN_BACKLOG, limit=WIRE_LINE_LIMIT)
        self._ticker = asyncio.create_task(self._tick_loop())
        self._flush()
        self._save_if_changed(force=True)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (recorded as ``server_restart`` on restore)."""
        if self._server is not None:
            self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        self.network.drop_all("server_restart")
        self._flush()
        self._save_if_changed(force=True)
        for link in list(self._links.values()):
            link.writer.close()
            if link.task is not None:
                link.task.cancel()

    # -- plumbing ----------------------------------------------------------

    def _flush(self) -> None:
        """Hand queued model messages to the writers; wake the timer task on a change."""
        for out in self.network.drain():
            link = self._links.get(out.conn_id)
            if link is not None:
                link.queue.put_nowait(out)
        if self.network.version != self._seen_version:  # timers may have changed
            self._seen_version = self.network.version
            self._wake.set()

    def _save_if_changed(self, force: bool = False) -> None:
        """Persist the model if it changed, at most every ``SAVE_INTERVAL_S`` unless forced."""
        if self.network.version == self._saved_version:
            return
        now = self.network.clock()
        if not force and now - self._saved_at < SAVE_INTERVAL_S:
            return
        self._saved_version, self._saved_at = self.network.version, now
        self._save()

    def _save(self) -> None:
        if not self.state_path:
            return
        directory = os.path.dirname(os.path.abspath(self.state_path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sandbox-state-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.network.snapshot(), f)
        os.replace(tmp, self.state_path)

    async def _tick_loop(self) -> None:
        """Run the model's timers when they are due (or every half second)."""
        clock = self.network.clock
        while True:
            deadline = self.network.next_deadline()
            wait = 0.5 if deadline is None else min(0.5, max(0.0, deadline - clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            self.network.advance()
            self._flush()
            self._save_if_changed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readline()
            if first.rstrip(b"\r\n") == MAGIC:
                await self._serve_wire(reader, writer)
            elif first:
                await self._serve_http(first, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
            log.debug("connection dropped: %s", e)
        finally:
            writer.close()

    # -- wire protocol -----------------------------------------------------

    async def _serve_wire(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = _parse_line(await reader.readline())
        if hello is None or hello.get("op") != "hello" or not isinstance(hello.get("tenant"), str):
            await _write_line(writer, {"ev": "error", "message": "expected a hello"})
            return
        tenant = hello["tenant"]
        client = str(hello.get("client") or "")[:100]
        if hello.get("mode") == "pair":
            conn_id = self.network.open_pairing(tenant, client)
        elif hello.get("mode") == "resume":
            jid, keys = hello.get("jid"), hello.get("keys")
            if not isinstance(jid, str) or not isinstance(keys, str):
                await _write_line(writer, {"ev": "error", "message": "resume needs jid, keys"})
                return
            conn_id = self.network.open_resume(tenant, jid, keys, client)
        else:
            await _write_line(writer, {"ev": "error", "message": "mode must be pair or resume"})
            return
        if conn_id is None:  # outage: refuse without a word, like a dead front end
            return
        log.info("conn %d: %s %s", conn_id, hello.get("mode"), tenant)
        link = _Link(writer)
        self._links[conn_id] = link
        link.task = asyncio.create_task(self._pump(link))
        self._flush()
        try:
            while self.network.connections[conn_id].live:
                line = await reader.readline()
                if not line:
                    break
                message = _parse_line(line)
                op = message.get("op") if message else None
                if op == "ping":
                    self.network.ping(conn_id)
                elif op == "logout":
                    self.network.logout(conn_id)
                elif op == "send":
                    self._wire_send(conn_id, link, message or {})
                elif op == "ack":
                    self.network.messaging.ack(conn_id, str((message or {}).get("key")))
                elif op == "pair_phone":
                    try:
                        self.network.request_pair_code(conn_id, str((message or {}).get("phone")))
                    except (ValueError, SandboxError) as e:
                        link.queue.put_nowait(Outgoing(conn_id, {"ev": "pair_code_error",
                                                                 "message": str(e)}))
                else:
                    link.queue.put_nowait(Outgoing(conn_id, {"ev": "error", "message": "bad op"}))
                self._flush()
        finally:
            self.network.client_closed(conn_id)
            self._flush()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await link.task
            self._links.pop(conn_id, None)

    def _wire_send(self, conn_id: int, link: _Link, message: dict[str, Any]) -> None:
        ref = str(message.get("ref") or "")
        content = message.get("content")
        try:
            if not isinstance(content, dict):
                raise ValueError("content must be an object")
            wa_id = self.network.messaging.send(conn_id, str(message.get("client_ref") or ""),
                                                str(message.get("chat")), content)
        except (ValueError, SandboxError) as e:
            reply = {"ev": "send_error", "ref": ref, "message": str(e)}
        else:
            reply = {"ev": "send_ack", "ref": ref, "wa_message_id": wa_id}
        link.queue.put_nowait(Outgoing(conn_id, reply))

    async def _pump(self, link: _Link) -> None:
        """Write queued messages in order, each after the configured latency."""
        while True:
            out = await link.queue.get()
            latency = self.network.settings.latency_s
            if latency > 0:
                await asyncio.sleep(latency)
            if out.message is not None:
                try:
                    await _write_line(link.writer, out.message)
                except ConnectionError:
                    out = Outgoing(out.conn_id, None, close=True)
            if out.close:
                link.writer.close()
                return

    # -- HTTP --------------------------------------------------------------

    async def _serve_http(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            status, body = await self._http_request(first, reader)
        except HttpError as e:
            status, body = e.status, {"error": str(e)}
        self._flush()
        data = json.dumps(body).encode()
        reason = HTTPStatus(status).phrase
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + data)
        await writer.drain()

    async def _http_request(
        self, first: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, Any]]:
        parts = first.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise HttpError(400, "malformed request line")
        method, target = parts[0], urlsplit(parts[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                if not value.strip().isdigit() or int(value) > MAX_BODY:
                    raise HttpError(400, "bad Content-Length")
                length = int(value)
        raw = await reader.readexactly(length) if length else b""
        body: Any = {}
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        query = {k: v[-1] for k, v in parse_qs(target.query).items()}
        try:
            return self._route(method, target.path, body, query)
        except SandboxError as e:
            raise HttpError(404, str(e)) from None
        except ValueError as e:
            raise HttpError(400, str(e)) from None

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        net = self.network
        net.advance()
        if (method, path) == ("GET", "/health"):
            return 200, {"ok": True}
        if (method, path) == ("GET", "/connections"):
            return 200, {"connections": net.connection_rows(query.get("tenant"))}
        if (method, path) == ("GET", "/conflicts"):
            return 200, {"conflicts": net.conflicts}
        if (method, path) == ("GET", "/pending"):
            return 200, {"pending": net.pending()}
        if (method, path) == ("GET", "/control"):
            return 200, asdict(net.settings)
        if (method, path) == ("POST", "/control"):
            return 200, asdict(net.configure(**body))
        if (method, path) == ("POST", "/phone/scan"):
            phone = body.get("phone")
            if phone is not None and not isinstance(phone, str):
                raise ValueError("phone must be a string of digits")
            return 200, net.scan(_require(body, "code", str), phone)
        if (method, path) == ("POST", "/phone/code"):
            phone = body.get("phone")
            if phone is not None and not isinstance(phone, str):
                raise ValueError("phone must be a string of digits")
            return 200, net.enter_code(_require(body, "code", str), phone)
        if (method, path) == ("POST", "/phone/unlink"):
            net.unlink(_require(body, "jid", str))
            return 200, {"ok": True}
        if method == "GET" and path.startswith("/phone/inbox/"):
            return 200, net.messaging.inbox(path.removeprefix("/phone/inbox/"))
        if method == "GET" and path.startswith("/phone/held/"):
            return 200, net.messaging.held_for(path.removeprefix("/phone/held/"))
        if (method, path) == ("POST", "/phone/send"):
            return 200, net.messaging.phone_send(_require(body, "from", str),
                                                 _require(body, "to", str),
                                                 _require(body, "text", str))
        if (method, path) == ("POST", "/phone/read"):
            net.messaging.phone_read(_require(body, "number", str),
                                     _require(body, "wa_message_id", str))
            return 200, {"ok": True}
        if (method, path) == ("GET", "/violations"):
            return 200, {"violations": net.messaging.violations}
        if (method, path) == ("POST", "/phone/ban"):
            code = body.get("code", 402)
            expire_s = _require(body, "expire_s", (int, float))
            if not isinstance(code, int) or isinstance(code, bool) or isinstance(expire_s, bool):
                raise ValueError("code must be an integer, expire_s a number")
            net.ban(_require(body, "jid", str), code, float(expire_s))
            return 200, {"ok": True}
        raise HttpError(404, f"no route for {method} {path}")


def _require(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or value == "":
        raise ValueError(f"{name} is required")
    return value


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _write_line(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()
