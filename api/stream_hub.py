"""Every event stream of one API process, held on one asyncio loop instead of one thread each.

The Flask view authenticates a ``GET /api/whatsapp/events`` request as before;
``api/stream_handoff.py`` then gives the connection's socket to this hub, and
gunicorn's thread is free at once. The hub writes the response itself:

- one reader task per process: ``XREAD BLOCK`` over the streams of every tenant
  watched here (one Redis connection, whatever the number of streams), woken
  with ``CLIENT UNBLOCK`` when a tenant is added;
- each event is formatted once and written to every connection of its tenant;
- a stream that resumes behind the reader (``Last-Event-ID``) first gets the
  missing events with one ``XRANGE``;
- per connection: a heartbeat comment after ``heartbeat_s`` without a write,
  the end after ``max_s``, and a close when the client stops reading
  (``MAX_BUFFER`` bytes unsent), so a stream never grows without bound.

The loop thread starts with the first stream handed over, in the process that
serves it (gunicorn forks its workers after loading the app).

Over 300 lines: the reader task, the fan-out and the per-connection timers share
one loop and its tables; split apart, each would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared import keys
from shared.config import Settings
from shared.events import Event, event_from_entry
from shared.redis_client import connect_redis_async

log = logging.getLogger(__name__)
RETRY_MS = 2000
OPENING = f"retry: {RETRY_MS}\n: stream open\n\n".encode()
HEARTBEAT = b": heartbeat\n\n"
FINISHED = b": max duration reached; reconnect with Last-Event-ID\n\n"
UNAVAILABLE = b": store unavailable; reconnect\n\n"
#: Bytes a client may leave unread before its stream is closed (it reconnects and resumes).
MAX_BUFFER = 256 * 1024
READ_COUNT = 100


def format_sse(event: Event) -> str:
    """One event in the text/event-stream format."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.to_dict())}\n\n"


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class StreamConnection(asyncio.Protocol):
    """One client's event stream: write-only; reads nothing after the request."""

    def __init__(self, hub: StreamHub, tenant: str, cursor: str,
                 release: Callable[[], None]) -> None:
        self.hub = hub
        self.tenant = tenant
        self.cursor = _order(cursor)
        self.catching_up: list[tuple[tuple[int, int], bytes]] | None = None
        self._release: Callable[[], None] | None = release
        self._transport: asyncio.Transport | None = None
        self._last_write = 0.0
        self._timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=MAX_BUFFER)
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()
        self._timers = [loop.call_later(self.hub.heartbeat_s, self._heartbeat),
                        loop.call_later(self.hub.max_s, self.finish, FINISHED)]

    def data_received(self, data: bytes) -> None:
        pass  # nothing more is expected on an event stream

    def eof_received(self) -> bool:
        return False  # the client went away: close our side too

    def pause_writing(self) -> None:
        # The client left MAX_BUFFER unread: drop it (close() would wait for it to read).
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._transport = None
        self.hub.forget(self)
        release, self._release = self._release, None
        if release is not None:
            release()

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_write = asyncio.get_running_loop().time()

    def deliver(self, order: tuple[int, int], data: bytes) -> None:
        """One formatted event, unless this stream has it already (or is still catching up)."""
        if self.catching_up is not None:
            self.catching_up.append((order, data))
        elif order > self.cursor:
            self.cursor = order
            self.write(data)

    def finish(self, last: bytes | None) -> None:
        if self._transport is None:
            return
        if last:
            self.write(last)
        self._transport.close()

    def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_write
        if idle >= self.hub.heartbeat_s * 0.99:
            self.write(HEARTBEAT)
            idle = 0.0
        self._timers[0] = loop.call_later(self.hub.heartbeat_s - idle, self._heartbeat)


@dataclass
class _Watch:
    """A tenant watched by this process: where the reader is, and who listens."""

    cursor: str
    connections: set[StreamConnection] = field(default_factory=set)


class StreamHub:
    """The loop thread, the reader and every connection of this process."""

    def __init__(self, settings: Settings, heartbeat_s: float, max_s: float) -> None:
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watches: dict[str, _Watch] = {}
        self._wanted: asyncio.Event | None = None
        self._reader: Any = None
        self._commands: Any = None
        self._reader_id: int | None = None
        self._reading: int | None = None  # the generation of the XREAD in flight
        self._unblocking: int | None = None

    # --- called from request threads ---------------------------------------
    def adopt(self, sock: socket.socket, head: bytes, tenant: str, cursor: str,
              release: Callable[[], None]) -> None:
        """Serve ``tenant``'s events after ``cursor`` on ``sock``, which now belongs to the hub."""
        loop = self._running_loop()
        asyncio.run_coroutine_threadsafe(self._open(sock, head, tenant, cursor, release), loop)

    def streams(self) -> int:
        """Connections held now (approximate when read from another thread)."""
        return sum(len(w.connections) for w in list(self._watches.values()))

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._watches = {}
                self._loop = asyncio.new_event_loop()
                ready = threading.Event()
                threading.Thread(target=self._run, args=(self._loop, ready), daemon=True,
                                 name="wapair-streams").start()
                ready.wait(5)
            return self._loop

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._wanted = asyncio.Event()
        # No retries of its own: a reconnect must be seen, it changes the CLIENT ID.
        self._reader = connect_redis_async(
            self.settings, "events", single_connection_client=True, retry=Retry(NoBackoff(), 0),
            socket_timeout=self.heartbeat_s + 5)
        self._commands = connect_redis_async(self.settings, "events", socket_timeout=5)
        loop.create_task(self._read_forever())
        ready.set()
        loop.run_forever()

    # --- on the loop --------------------------------------------------------
    async def _open(self, sock: socket.socket, head: bytes, tenant: str, cursor: str,
                    release: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.connect_accepted_socket(
                lambda: StreamConnection(self, tenant, cursor, release), sock)
        except Exception:  # the client may be gone already
            sock.close()
            release()
            return
        connection.write(head + OPENING)
        self._subscribe(connection)

    def _subscribe(self, connection: StreamConnection) -> None:
        watch = self._watches.get(connection.tenant)
        cursor = "{}-{}".format(*connection.cursor)
        if watch is None:
            self._watches[connection.tenant] = _Watch(cursor, {connection})
            self._wake_reader()
            return
        watch.connections.add(connection)
        if connection.cursor < _order(watch.cursor):
            # Behind the reader: what it already passed on comes from one XRANGE.
            connection.catching_up = []
            asyncio.get_running_loop().create_task(
                self._catch_up(connection, cursor, watch.cursor))

    async def _catch_up(self, connection: StreamConnection, after: str, upto: str) -> None:
        try:
            entries = await self._commands.xrange(keys.events(connection.tenant),
                                                  f"({after}", upto)
        except redis.RedisError:
            connection.finish(UNAVAILABLE)
            return
        pending, connection.catching_up = connection.catching_up or [], None
        for entry_id, fields in entries:
            event = event_from_entry(entry_id, fields)
            connection.deliver(_order(event.id), format_sse(event).encode())
        for order, data in pending:
            connection.deliver(order, data)

    def forget(self, connection: StreamConnection) -> None:
        watch = self._watches.get(connection.tenant)
        if watch is not None:
            watch.connections.discard(connection)
            if not watch.connections:
                del self._watches[connection.tenant]

    def _wake_reader(self) -> None:
        assert self._wanted is not None
        self._wanted.set()
        if self._reading is not None and self._unblocking != self._reading:
            self._unblocking = self._reading  # one CLIENT UNBLOCK per read, however many join
            asyncio.get_running_loop().create_task(self._unblock(self._reading))

    async def _unblock(self, generation: int) -> None:
        # The XREAD may not have reached Redis yet (UNBLOCK answers 0): try again
        # until it has returned or the read it belongs to is over.
        for _ in range(200):
            if self._reading != generation or self._reader_id is None:
                return
            try:
                if await self._commands.client_unblock(self._reader_id):
                    return
            except redis.RedisError:
                return  # the read's own timeout picks the new tenant up
            await asyncio.sleep(0.005)

    async def _read_forever(self) -> None:
        assert self._wanted is not None
        generation = 0
        while True:
            if not self._watches:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            self._wanted.clear()
            tenants = {keys.events(t): t for t in self._watches}
            streams = {k: self._watches[t].cursor for k, t in tenants.items()}
            try:
                if self._reader_id is None:
                    self._reader_id = int(await self._reader.client_id())
                generation += 1
                self._reading = generation
                reply = await self._reader.xread(streams, count=READ_COUNT,
                                                 block=max(1, int(self.heartbeat_s * 1000)))
            except (redis.RedisError, OSError) as e:
                self._reading = None
                self._reader_id = None
                self._fail_all(e)
                await asyncio.sleep(0.5)
                continue
            self._reading = None
            self._fan_out(reply, tenants)

    def _fan_out(self, reply: Any, tenants: dict[str, str]) -> None:
        for key, entries in reply or []:
            watch = self._watches.get(tenants[key.decode() if isinstance(key, bytes) else key])
            if watch is None:
                continue
            for entry_id, fields in entries:
                event = event_from_entry(entry_id, fields)
                watch.cursor = event.id
                order, data = _order(event.id), format_sse(event).encode()
                for connection in list(watch.connections):
                    connection.deliver(order, data)

    def _fail_all(self, error: BaseException) -> None:
        log.warning("event streams: Redis read failed (%s); closing %d streams",
                    type(error).__name__, self.streams())
        for watch in list(self._watches.values()):
            for connection in list(watch.connections):
                connection.finish(UNAVAILABLE)
        self._watches.clear()
