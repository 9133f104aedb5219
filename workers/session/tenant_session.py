"""One owned tenant: runs its commands in order and turns WhatsApp events into state.

``TenantSession`` composes the parts of ``workers.session`` (take-over, commands,
pairing, events over the shared core and its client slot) and adds the
session's lifecycle: whether it still wants its lease, and how it ends (a fence,
a warm shutdown's handover).
"""

from __future__ import annotations

from shared import owner_writes as writes
from shared.state_machine import LIVE_STATES, PairingStatus, SessionState
from shared.whatsapp.port import WhatsAppSession
from workers.session.commands import CommandsMixin
from workers.session.events import EventsMixin
from workers.session.take_over import TakeOverMixin


class TenantSession(TakeOverMixin, CommandsMixin, EventsMixin):
    """The owner's view of one tenant: its lease, its live client and its pairing.

    A ``TenantSession`` exists only while its worker holds the tenant's lease.
    """

    def wants_session(self) -> bool:
        """True while the tenant needs this worker to keep its lease.

        A client still closing counts: released before its ``CLOSED``, the lease
        could go to a worker that opens the tenant's next connection while this
        one's socket is still up (two connections: WhatsApp removes the device).
        """
        if self.handle is not None or self._slot.closing():
            return True
        session, _ = self._store.read(self.tenant)
        return session.get("state") in LIVE_STATES

    def closing_clients(self) -> list[WhatsAppSession]:
        """Clients detached and not confirmed closed yet."""
        return self._slot.closing_handles()

    def retry_unwritten_end(self) -> None:
        """Write a session's end again if Redis was away when it happened.

        Without it the state would still say connected: this worker would keep the
        lease with no client (wants_session), and nobody else could take the tenant.
        """
        with self._lock:
            if self._unwritten_end is None or not self._write_end():
                return
        self._on_idle(self.tenant)


    def resume_after_ban(self) -> None:
        """Open the client again once a temporary ban's expiry has passed (each tick)."""
        with self._lock:
            until = self.banned_until
            if until is None or self._clock.monotonic() < until:
                return
            self.banned_until = None
            if self.fenced or self.handle is not None:
                return
            session, _ = self._store.read(self.tenant)
            if session.get("state") != SessionState.RECONNECTING or not session.get("device"):
                return  # reset or logged out meanwhile: nothing to resume
            self.log.info("tenant %s: the temporary ban has expired; resuming", self.tenant)
            self._open("resume", session["device"])

    def fence(self) -> WhatsAppSession | None:
        """The lease is gone or about to be: drop the connection, write nothing.

        Returns the client being closed, so nobody reopens one before it is gone.
        """
        self._settled.set()
        with self._lock:
            self.fenced = True
            self.pairing_deadline = None
            return self._detach()

    def handover(self) -> WhatsAppSession | None:
        """Warm shutdown: mark the tenant reconnecting, close the client, return it."""
        self._settled.set()  # a take-over still waiting for its resume stops waiting
        with self._lock:
            handle = self.handle
            live = handle is not None and self.mode == "resume"
            if self.mode == "pair":
                self._end_pairing(
                    self.pairing_id, PairingStatus.CANCELLED, SessionState.IDLE,
                    self._error("worker_shutdown", "the worker stopped during pairing; pair again"),
                )
            elif live:
                self._write(writes.reconnecting(owner="", cause="shutdown"))
            self.fenced = True
            self._detach()
            return handle

