"""The tenant's one WhatsApp client: opened under a valid lease, each with its own token.

Every open takes a new token and every detach retires it, so an event, a dial
question or a lease-window question from an older client is told apart from the
current one's. A fenced slot never opens again.

A detached client is not gone until its ``CLOSED`` came: until then the slot
counts it as *closing* and the owner keeps the lease (``TenantSession.wants_session``),
so no other worker opens the tenant's next client while this one may still hold
a socket. The close is bounded (a host that does not confirm is killed), so the
lease is kept for seconds at most.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared.lease import HeldLease, LeaseKeeper
from shared.whatsapp.port import WaEvent, WhatsAppBackend, WhatsAppSession

#: Called with (token, event) for every event of a client this slot opened.
TokenedEvent = Callable[[int, WaEvent], None]


class ClientSlot:
    """At most one open client of one tenant, and whether its lease still lets it run."""

    def __init__(self, lease: HeldLease, *, leases: LeaseKeeper, backend: WhatsAppBackend,
                 lock: threading.RLock) -> None:
        self.tenant = lease.tenant
        self.lease = lease
        self._leases = leases
        self._backend = backend
        self._lock = lock  # the session's
        self.handle: WhatsAppSession | None = None
        self.mode: str | None = None  # "pair" or "resume" while a handle is open
        self.fenced = False
        self._token = 0
        # Detached clients whose CLOSED has not come yet, by their token.
        self._unconfirmed: dict[int, WhatsAppSession] = {}

    def is_current(self, token: int) -> bool:
        """True if ``token`` is the open client's."""
        return token == self._token

    def lease_valid(self) -> bool:
        """True unless the slot is fenced or the local lease may be gone."""
        return not self.fenced and self._leases.is_valid(self.tenant, self.lease.fence)

    def open(self, mode: str, jid: str | None, on_event: TokenedEvent) -> bool:
        """Open a client unless the lease is gone; True if one was opened."""
        with self._lock:
            if not self.lease_valid():
                return False
            self._token += 1
            token = self._token
            self.mode = mode
            self.handle = self._backend.open_session(
                self.tenant, jid=jid, on_event=lambda ev: on_event(token, ev),
                may_connect=lambda: self.may_connect(token),
                lease_left=lambda: self.lease_left(token),
            )
            return True

    def may_connect(self, token: int) -> bool:
        """Asked by the adapter right before each dial: is this client still ours to run?

        Without the session's lock: the adapter asks on its I/O loop, which must not
        wait while a command holds the lock across a Redis write. Each read is atomic,
        and a fence that lands just after the answer is caught as before: the fence
        closes the client, and every event it sends is checked against the token.
        """
        return self.is_current(token) and self.lease_valid()

    def lease_left(self, token: int) -> float:
        """Seconds this client may still run under the lease (see ``LeaseKeeper.safe_left``)."""
        if not self.is_current(token) or self.fenced:
            return 0.0
        return self._leases.safe_left(self.tenant, self.lease.fence)

    def detach(self, close: bool = True, *, closed: bool = False) -> WhatsAppSession | None:
        """Forget the current client (its later events are ignored) and close it.

        It stays *closing* until its ``CLOSED`` comes (``confirm_closed``), unless
        ``closed`` says this is its ``CLOSED``.
        """
        with self._lock:
            handle, self.handle, self.mode = self.handle, None, None
            if handle is not None and not closed:
                self._unconfirmed[self._token] = handle
            self._token += 1
        if handle is not None and close:
            handle.close()
        return handle

    def confirm_closed(self, token: int) -> bool:
        """An older client's ``CLOSED`` came; True if it was the last one closing."""
        with self._lock:
            if self._unconfirmed.pop(token, None) is None:
                return False
            return not self._unconfirmed

    def closing(self) -> bool:
        """True while a detached client may still hold a connection."""
        with self._lock:
            for token, handle in list(self._unconfirmed.items()):
                if handle.wait_closed(0):
                    del self._unconfirmed[token]
            return bool(self._unconfirmed)

    def closing_handles(self) -> list[WhatsAppSession]:
        """The detached clients not confirmed closed yet (a shutdown waits for them)."""
        with self._lock:
            return list(self._unconfirmed.values())
