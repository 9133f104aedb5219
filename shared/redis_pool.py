"""Connection pools that keep one connection per thread (``PinnedPool``,
``PinnedSentinelPool``), for every client ``connect_redis`` makes.

redis-py's pool checks a connection out and back in on every command: a lock, and
a poll of the socket for unread data, a syscall. On these 2-vCPU VMs that was about
25 of the 70-110 us of CPU a worker spent per round trip (``docs/performance.md``,
"Connections kept per thread"). Our processes call Redis from long-lived threads
(the drains, the event dispatchers, the API's request threads), so each thread
keeps the connection it first got and skips both (the poll only after the
connection sat idle, ``IDLE_CHECK_S``). The connection is still the
pool's kind and settings (timeouts, health checks, Sentinel's primary lookup):

- a thread that asks again while its own connection is busy (a second client
  call nested in the first) gets an ordinary pooled one;
- a thread's connection closes when the thread ends;
- ``disconnect()`` closes the kept connections too; a Sentinel switch of primary
  (which disconnects only idle connections) makes each kept one reconnect at its
  next release, as a pooled one would on its way back in;
- after a fork the child never reuses the parent's socket.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

#: A kept connection idle this long is checked for a closed socket or unread data
#: before its next use, as the pool checks every connection it hands out: a Redis
#: restarted meanwhile costs no failed call. Busier connections skip the check.
IDLE_CHECK_S = 0.2


class _Closer:
    """Closes a kept connection when its thread's locals go, at the thread's end (the
    connection itself is in reference cycles: left to the collector, its socket would
    stay open until a collection)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __del__(self) -> None:
        try:
            self.conn.disconnect()
        except Exception:  # noqa: BLE001 - at interpreter exit anything may be gone
            pass


class _Pins(threading.local):
    conn: Any = None
    pid: int = 0
    busy: bool = False
    generation: int = 0
    released_at: float = 0.0
    closer: _Closer | None = None


class _Pinning:
    """The per-thread connection, mixed in ahead of a redis-py pool class."""

    _lock: Any
    _in_use_connections: set[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pins = _Pins()
        self._pinned: weakref.WeakSet[Any] = weakref.WeakSet()
        self._generation = 0  # bumped when idle connections must reconnect
        super().__init__(*args, **kwargs)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        pins = self._pins
        if pins.conn is not None and pins.pid == os.getpid():
            if pins.busy:  # nested in this thread's own call: a pooled one
                return super().get_connection(*args, **kwargs)  # type: ignore[misc]
            pins.busy = True
            conn = pins.conn
            try:
                conn.connect()  # a no-op while connected
                if time.monotonic() - pins.released_at > IDLE_CHECK_S and _stale(conn):
                    conn.disconnect()
                    conn.connect()
            except BaseException:
                pins.busy = False
                raise
            return conn
        conn = super().get_connection(*args, **kwargs)  # type: ignore[misc]
        with self._lock:  # kept by the thread, not the pool: it dies with the thread
            self._in_use_connections.discard(conn)
        pins.conn, pins.pid, pins.busy, pins.generation = (
            conn, os.getpid(), True, self._generation)
        pins.closer = _Closer(conn)
        self._pinned.add(conn)
        return conn

    def release(self, connection: Any) -> None:
        pins = self._pins
        if connection is not pins.conn or pins.pid != os.getpid():
            super().release(connection)  # type: ignore[misc]
            return
        pins.busy = False
        pins.released_at = time.monotonic()
        reconnect = getattr(connection, "should_reconnect", lambda: False)
        if (pins.generation != self._generation or reconnect()
                or not self.owns_connection(connection)):  # type: ignore[attr-defined]
            # As a pooled connection is on its way back in: the next call connects
            # afresh (to the current primary, with Sentinel).
            connection.disconnect()
            pins.generation = self._generation

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)  # type: ignore[misc]
        if inuse_connections:
            for conn in list(self._pinned):
                conn.disconnect()
        else:
            self._generation += 1

    def pinned_count(self) -> int:
        """How many kept connections this pool knows (for tests and tools); a dead
        thread's, already closed, counts until the collector frees it."""
        return len(self._pinned)


def _stale(conn: Any) -> bool:
    """True if the server closed ``conn`` or left it a reply nobody read."""
    try:
        return bool(conn.can_read())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return True


class PinnedPool(_Pinning, redis.ConnectionPool):
    """``redis.ConnectionPool`` with one connection kept per thread."""


class PinnedSentinelPool(_Pinning, SentinelConnectionPool):
    """``SentinelConnectionPool`` (the primary's) with one connection kept per thread."""
