"""A WhatsApp session held in a connection host, as the worker's code sees it.

It implements the port's ``WhatsAppSession``, so the tenant's owner neither knows
nor cares which process holds the client. What it adds is in the pool: a close
that is not confirmed in time kills the host, and a session whose host died
while the owner still wants it is opened again in a fresh host.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from shared.whatsapp.port import EventKind, EventSink, WaEvent


class SessionPool(Protocol):
    """What a session asks of its pool (``workers.host.pool.HostPool``)."""

    def close(self, session: HostedSession) -> None: ...

    def logout(self, session: HostedSession) -> None: ...

    def on_dispatch_thread(self) -> bool: ...

    def send_order(self, session: HostedSession, frame: dict[str, Any]) -> bool: ...

    def send_message(self, session: HostedSession, chat: str,
                     content: dict[str, Any]) -> str: ...

    def deliver(self, session: HostedSession, event: WaEvent) -> None: ...


class HostedSession:
    """One client in a connection host; every method is safe from any thread."""

    def __init__(
        self,
        pool: SessionPool,
        tenant: str,
        jid: str | None,
        on_event: EventSink,
        may_connect: Callable[[], bool] | None,
        lease_left: Callable[[], float | None] | None,
    ) -> None:
        self.pool = pool
        self.tenant = tenant
        self.jid = jid  # what a reopen resumes: the device once pairing has succeeded
        self.sid = uuid.uuid4().hex  # never the tenant id: a late order acts on this session only
        self.on_event = on_event
        self.may_connect = may_connect
        self.lease_left = lease_left
        # The HostProcess holding it (None while it waits to reopen); typed loosely so
        # this module imports neither the pool nor the process (no import cycle).
        self.host: Any = None
        self.sent_until = 0.0  # the last self-fence time the host was given
        self.close_by: float | None = None  # monotonic: kill the host if CLOSED is not here
        self.closing = False
        self.reopens = 0
        self.done = threading.Event()  # CLOSED was delivered

    # --- the port -----------------------------------------------------------
    def close(self) -> None:
        """Disconnect for good; CLOSED follows within the pool's close bound. Idempotent."""
        self.pool.close(self)

    def logout(self) -> None:
        """Unlink the device on the server, then close; the owner deletes the store."""
        self.pool.logout(self)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until CLOSED was delivered; from an event handler, only look (it may be
        queued behind the caller)."""
        if self.pool.on_dispatch_thread():
            return self.done.is_set()
        return self.done.wait(timeout)

    def send_message(self, chat: str, content: dict[str, Any]) -> str:
        """Send a message through the host; WhatsApp's id for it, or HostCallFailed."""
        return self.pool.send_message(self, chat, content)

    def ack_inbound(self, ack: str) -> None:
        """Tell the host the owner recorded an inbound message or receipt (lost if the host
        is gone: the server then offers it again, and the owner records it once)."""
        self.pool.send_order(self, {"op": "ack", "sid": self.sid, "ack": ack})

    def request_pair_code(self, phone: str) -> None:
        """Ask for a phone pairing code; PAIR_CODE or CONNECT_FAILURE answers."""
        if not self.pool.send_order(self, {"op": "pair_code", "sid": self.sid, "phone": phone}):
            self.pool.deliver(self, WaEvent(EventKind.CONNECT_FAILURE, {
                "reason": "pair_code", "message": "no live connection to ask for a pair code"}))

    # --- for the pool -------------------------------------------------------
    def handle(self, event: WaEvent) -> None:
        """Deliver one event to the owner (on a dispatch thread, in order)."""
        if self.done.is_set():
            return
        if event.kind in (EventKind.PAIR_SUCCESS, EventKind.CONNECTED) and event.data.get("jid"):
            self.jid = str(event.data["jid"])
        try:
            self.on_event(event)
        finally:
            if event.kind is EventKind.CLOSED:
                self.done.set()
