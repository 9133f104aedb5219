"""Hands hosted sessions' events to their owners, off the hosts' reader threads.

A few threads, a session always on the same one, so each session's events keep
their order and an owner waiting on Redis never stalls a host's socket.
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib

from shared.whatsapp.port import WaEvent
from workers.host.session import HostedSession

log = logging.getLogger(__name__)

DISPATCH_THREADS = 4


class EventDispatcher:
    """Delivers ``(session, event)`` pairs on ``threads`` threads, in order per session."""

    def __init__(self, threads: int = DISPATCH_THREADS) -> None:
        self._queues: list[queue.SimpleQueue[tuple[HostedSession, WaEvent]]] = [
            queue.SimpleQueue() for _ in range(threads)]
        self._idents: set[int] = set()
        for i, q in enumerate(self._queues):
            thread = threading.Thread(target=self._run, args=(q,), daemon=True,
                                      name=f"wa-host-events-{i}")
            thread.start()
            assert thread.ident is not None
            self._idents.add(thread.ident)

    def deliver(self, session: HostedSession, event: WaEvent) -> None:
        """Queue an event for its owner."""
        self._queues[zlib.crc32(session.sid.encode()) % len(self._queues)].put((session, event))

    def on_own_thread(self) -> bool:
        return threading.get_ident() in self._idents

    @staticmethod
    def _run(q: queue.SimpleQueue[tuple[HostedSession, WaEvent]]) -> None:
        while True:
            session, event = q.get()
            try:
                session.handle(event)
            except Exception:
                log.exception("tenant %s: event handler failed on %s", session.tenant,
                              event.kind.value)
