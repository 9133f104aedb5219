"""The commands of a tenant's mailbox: pair, reset, logout, resume, send.

Each runs on the tenant's drain, one at a time; every one is safe to run twice.
"""

from __future__ import annotations

import logging

from shared import owner_writes as writes
from shared.errors import WhatsAppError
from shared.state import Command, StateSnapshot
from shared.state_machine import ACTIVE_PAIRING, ENDED_PAIRING, PairingStatus, SessionState
from workers.session import core
from workers.session.messaging import MessagingMixin
from workers.session.pairing import PairingMixin


class CommandsMixin(PairingMixin, MessagingMixin):
    """Carrying out the mailbox's commands."""

    def run_command(self, command: Command,
                    state: StateSnapshot | None = None) -> None:
        """Carry out one command; stale and duplicate commands change nothing.

        ``state``: the session and pairing hashes read as the command was taken.
        """
        # Sends are the many (metrics count them); the other commands are worth a line.
        level = logging.DEBUG if command.kind == "send" else logging.INFO
        self.log.log(level, "tenant %s: command %s (%s)", self.tenant, command.kind, command.id,
                     extra={"command": command.kind, "pairing_id": command.pairing_id or None})
        if command.kind == "pair":
            self._pair(command, state or self._store.read(self.tenant))
        elif command.kind == "reset":
            self._reset()
        elif command.kind == "logout":
            self._logout()
        elif command.kind == "resume":
            self._resume()
        elif command.kind == "send":
            self._send(command)
        else:
            self.log.warning("tenant %s: unknown command kind %r dropped", self.tenant,
                             command.kind)

    def _reset(self) -> None:
        self._close_and_wait()
        self.banned_until = None  # idle now: nothing to resume at a ban's expiry
        session, pairing = self._store.read(self.tenant)
        if (session.get("state") == SessionState.PAIRING
                and pairing.get("status") not in ENDED_PAIRING):
            self._end_pairing(pairing.get("id", ""), PairingStatus.CANCELLED, SessionState.IDLE,
                              "")
        else:
            self._write(writes.session_ended(SessionState.IDLE, ""))

    def _logout(self) -> None:
        with self._lock:
            handle, never_linked = self.handle, self.mode == "pair" and self._paired is None
            self._detach(close=False)
            self.banned_until = None  # logged out: nothing to resume at a ban's expiry
        if handle is not None:
            try:
                if not never_linked:  # a device never linked has nothing to unlink
                    handle.logout()
            except WhatsAppError as e:
                # The store is deleted and the state reset all the same: a logout that
                # fails here must not run again for ever (neonize: "client is nil").
                self.log.warning("tenant %s: unlinking on the server failed (%s); the local "
                                 "keys are deleted anyway", self.tenant, e)
            finally:
                handle.close()
                handle.wait_closed(core.CLOSE_WAIT_S)
        session, pairing = self._store.read(self.tenant)
        self._backend.delete_store(self.tenant, jid=session.get("device") or None)
        if pairing.get("status") in (PairingStatus.QUEUED, *ACTIVE_PAIRING):
            self._end_pairing(pairing.get("id", ""), PairingStatus.CANCELLED, SessionState.IDLE,
                              "")
        self._write(writes.session_ended(SessionState.IDLE, "", forget_device=True))


    def _resume(self) -> None:
        session, _ = self._store.read(self.tenant)
        if self.handle is None and session.get("device"):
            self._open("resume", session["device"])
