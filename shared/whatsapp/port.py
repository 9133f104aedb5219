"""The WhatsApp port: one small interface that both adapters implement.

A session is one live (or dialling) WhatsApp client for one tenant. The worker
opens it either to pair a new device (``jid=None``) or to resume a linked one
(``jid`` given, never omitted: see DESIGN.md on neonize resuming the first
device in a shared store). Everything the client reports reaches the worker as
a :class:`WaEvent` through the ``on_event`` callback, possibly from a foreign
thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class EventKind(enum.StrEnum):
    """The event vocabulary shared by every adapter."""

    QR = "qr"  # data: code (str), expires_in (float seconds), index (int, 0-based)
    PAIR_CODE = "pair_code"  # data: code (str, XXXX-XXXX); answers request_pair_code
    PAIR_SUCCESS = "pair_success"  # data: jid (str), platform (str), business_name (str)
    CONNECTED = "connected"  # data: jid (str)
    DISCONNECTED = "disconnected"  # data: reason (str); the adapter may reconnect itself
    # data: reason (int|str), on_connect (bool), detail (device_removed, unlinked,
    # client_logout, no_device) where known; final
    LOGGED_OUT = "logged_out"
    STREAM_REPLACED = "stream_replaced"  # another connection took our keys; final
    TEMPORARY_BAN = "temporary_ban"  # data: code (int), expire_s (float)
    CLIENT_OUTDATED = "client_outdated"  # the library must be upgraded; final
    CONNECT_FAILURE = "connect_failure"  # data: reason (int|str), message (str)
    KEEPALIVE_TIMEOUT = "keepalive_timeout"  # data: error_count (int)
    KEEPALIVE_RESTORED = "keepalive_restored"
    PAIRING_TIMEOUT = "pairing_timeout"  # the server stopped offering QR codes
    # data: wa_message_id, from (JID), chat (JID), at (unix s), type (text|image|document),
    # text (or the caption), and for media mime_type, filename, size, media_base64.
    # ack: the token to pass to ack_inbound once it is recorded (at least once: the
    # server offers it again, on this connection or the next, until then).
    MESSAGE = "message"
    # data: wa_message_id, status (delivered|read), at, ack: a receipt for a message we sent
    RECEIPT = "receipt"
    # The session has ended for good: always the last event, sent once by the
    # session's thread as it ends (wait_closed() then returns True). A pairing
    # connection that drops cannot resume, so it ends DISCONNECTED then CLOSED
    # with no final event before it.
    CLOSED = "closed"


#: Events after which an adapter must never reconnect on its own.
FINAL_EVENTS = frozenset(
    {
        EventKind.LOGGED_OUT,
        EventKind.STREAM_REPLACED,
        EventKind.CLIENT_OUTDATED,
        EventKind.TEMPORARY_BAN,
        EventKind.PAIRING_TIMEOUT,
    }
)


@dataclass(frozen=True)
class WaEvent:
    """One thing a WhatsApp session reported."""

    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[WaEvent], None]


class WhatsAppSession(Protocol):
    """A handle on one open session; every method is safe to call from any thread."""

    def close(self) -> None:
        """Disconnect and stop for good: no reconnect follows. Idempotent."""

    def logout(self) -> None:
        """Unlink the device on the server, close, and delete the tenant's store."""

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the session's thread has ended; True if it has."""

    def send_message(self, chat: str, content: dict[str, Any]) -> str:
        """Send one message to ``chat`` (a JID) and return WhatsApp's id for it.

        ``content``: ``{"kind": "text", "text"}`` or ``{"kind": "image"|"document",
        "media_base64", "mime_type", "filename", "caption"}``, and ``ref``: our message
        id (the sandbox uses it to detect a duplicate delivery; WhatsApp never sees it).
        Blocks until the server took it; raises ``WhatsAppError`` when it did not (then
        it was not sent, or, for a lost answer, the caller cannot know: ``unknown``).
        """

    def ack_inbound(self, ack: str) -> None:
        """The owner has recorded the ``MESSAGE`` or ``RECEIPT`` whose data carried ``ack``:
        the server may forget it. A no-op where the library acknowledges by itself."""

    def request_pair_code(self, phone: str) -> None:
        """Ask the server for a code to link the phone ``phone`` (E.164 digits, no '+').

        Only for a pairing session, after its first QR event (whatsmeow needs the
        connection that QR pairing opened). Returns at once: the code arrives as a
        ``PAIR_CODE`` event, a refusal as ``CONNECT_FAILURE`` with
        ``data["reason"] == "pair_code"`` (the worker then ends the pairing failed).
        """


class WhatsAppBackend(Protocol):
    """Opens sessions; one instance serves every tenant of a worker process."""

    name: str

    def open_session(
        self, tenant: str, *, jid: str | None, on_event: EventSink,
        may_connect: Callable[[], bool] | None = None,
        lease_left: Callable[[], float | None] | None = None,
    ) -> WhatsAppSession:
        """Start a session for ``tenant`` in the background and return at once.

        ``may_connect``, if given, is asked right before every dial (the first and
        each reconnect); False ends the session (``CLOSED``) without dialling. The
        owner answers from its lease, so a process that was paused between opening
        a session and its dial never connects once its lease may be gone.

        ``lease_left``, if given, answers how many seconds the owner may still run
        the session before it would self-fence (0 or less: no longer). A backend
        that holds clients in another process (``workers.host``) passes it on, so
        that process drops the client by itself when the owner stops renewing.

        ``jid=None`` pairs a new device (a fresh store entry, QR events follow);
        otherwise the device ``jid`` is resumed from the tenant's store. Dial
        failures are reported as ``CONNECT_FAILURE`` with
        ``data["reason"] == "dial"`` followed by ``CLOSED``, never raised.
        """

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None:
        """Remove the tenant's stored device keys (after a logout or a removed device).

        ``jid``: the device, from the tenant's session state; a shared store
        (PostgreSQL) needs it to find the rows, also after a restart.
        """
