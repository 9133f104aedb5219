"""An in-process WhatsApp double for SessionHost unit tests: the test plays the server.

It stands in for the external WhatsApp network only; the end-to-end tests use
the real sandbox process and real workers instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.whatsapp.port import EventKind, EventSink, WaEvent


@dataclass
class ScriptedSession:
    tenant: str
    jid: str | None
    on_event: EventSink
    may_connect: Callable[[], bool] | None = None
    lease_left: Callable[[], float | None] | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    # With it, close() only asks: CLOSED comes when the test calls finish_close()
    # (a host still tearing its socket down).
    defer_close: bool = False
    close_asked: bool = False
    logged_out: bool = False
    pair_code_requests: list[str] = field(default_factory=list)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    answer: Callable[[str, dict[str, Any]], str] = lambda chat, content: f"WA{len(chat)}"
    # The thread the worker opened it from (a Celery kick's first command runs there).
    opened_on: str = field(default_factory=lambda: threading.current_thread().name)

    def emit(self, kind: EventKind, **data: object) -> None:
        self.on_event(WaEvent(kind, dict(data)))

    def close(self) -> None:
        self.close_asked = True
        if not self.defer_close:
            self.finish_close()

    def finish_close(self) -> None:
        """The socket is gone: CLOSED (once)."""
        if not self.closed.is_set():
            self.closed.set()
            self.on_event(WaEvent(EventKind.CLOSED))

    def logout(self) -> None:
        self.logged_out = True

    def send_message(self, chat: str, content: dict[str, Any]) -> str:
        """What the test's ``answer`` says (a WhatsApp id, or it raises); recorded first."""
        self.sent.append((chat, dict(content)))
        return self.answer(chat, content)

    def ack_inbound(self, ack: str) -> None:
        self.acked.append(ack)

    def request_pair_code(self, phone: str) -> None:
        self.pair_code_requests.append(phone)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closed.wait(timeout)


class ScriptedBackend:
    name = "scripted"

    def __init__(self) -> None:
        self.sessions: list[ScriptedSession] = []
        self.deleted_stores: list[str] = []
        self.defer_close = False  # sessions opened from now on confirm a close only when told

    def open_session(self, tenant: str, *, jid: str | None, on_event: EventSink,
                     may_connect: Callable[[], bool] | None = None,
                     lease_left: Callable[[], float | None] | None = None) -> ScriptedSession:
        session = ScriptedSession(tenant, jid, on_event, may_connect, lease_left,
                                  defer_close=self.defer_close)
        self.sessions.append(session)
        return session

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None:
        self.deleted_stores.append(tenant)

    def live(self, tenant: str) -> list[ScriptedSession]:
        """The tenant's open sessions (the host may also claim other tests' tenants)."""
        return [s for s in self.sessions if s.tenant == tenant and not s.closed.is_set()]
