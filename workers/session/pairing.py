"""A pairing run by the owner: the pair command, the pairing's deadline, how it ends."""

from __future__ import annotations

from shared import owner_writes as writes
from shared.errors import WapairError
from shared.state import Command, StateSnapshot
from shared.state_machine import PairingStatus, SessionState, WriteResult
from workers.session.core import SessionCore

#: A device that paired but is not Connected this long after PairSuccess (whatsmeow's
#: reconnect after the 515 failed, which it only logs) is resumed by its owner.
PAIRED_CONNECT_S = 20.0


class PairingMixin(SessionCore):
    """Starting a pairing, and ending it when its deadline passes."""

    def _pair(self, command: Command, state: StateSnapshot) -> None:
        session, pairing = state
        if (
            session.get("state") != SessionState.PAIRING
            or session.get("pairing_id") != command.pairing_id
            or pairing.get("status") != PairingStatus.QUEUED
        ):
            self.log.info("tenant %s: pair command %s is stale", self.tenant, command.id)
            return
        self._close_and_wait()
        remaining = float(pairing.get("deadline_at") or 0) - self._clock.time()
        if remaining <= 0:
            self._end_pairing(
                command.pairing_id, PairingStatus.EXPIRED, SessionState.IDLE,
                self._error("pairing_expired", "the pairing expired before a worker started it"),
            )
            return
        with self._lock:
            self.pairing_id = command.pairing_id
            self.pair_phone, self._pair_code_asked = command.phone.lstrip("+"), False
            self.pairing_started_at = float(pairing.get("started_at") or self._clock.time())
            self.pairing_deadline = self._clock.monotonic() + remaining
            # The client dials while 'starting' is written (a round trip off the path to
            # the first QR); its events wait for this lock, so 'starting' still lands first.
            if not self._open("pair", None):
                return
            try:
                written = self._write(writes.pairing_started(command.pairing_id,
                                                             self._leases.owner_id))
            except WapairError:
                self._detach()  # the command stays in flight and runs again
                raise
            if written is WriteResult.PAIRING_SKIPPED:  # another pairing replaced it
                self.pairing_id, self.pairing_deadline = "", None
                self._detach()


    def check_deadline(self) -> None:
        """End the pairing as expired once PAIRING_TIMEOUT_S has passed; resume a device
        that paired but did not reach Connected within PAIRED_CONNECT_S.

        The deadline is forgotten only once the expiry is written: if Redis cannot
        be reached, the next maintenance tick tries again. (Forgetting it first left
        a pairing whose expiry write met a Redis outage in ``qr`` for good: this
        worker kept the lease, since the state still said pairing, so neither the
        cleanup sweep nor another worker could end it; found by the chaos suite.)
        """
        with self._lock:
            self._resume_unconnected_device()
            deadline = self.pairing_deadline
            if deadline is None or self._clock.monotonic() < deadline:
                return
            pairing_id = self.pairing_id
            self._detach()
            try:
                self._end_pairing(
                    pairing_id, PairingStatus.EXPIRED, SessionState.IDLE,
                    self._error("pairing_expired", "no phone scanned the QR code in time"),
                )
            except WapairError as e:
                self.log.warning("tenant %s: could not expire the pairing yet (%s); retrying",
                                 self.tenant, e)
                return
            self.pairing_deadline = None
        self._on_idle(self.tenant)

    def _resume_unconnected_device(self) -> None:
        """whatsmeow reconnects by itself after the 515 that follows PairSuccess; when that
        reconnect fails it only logs, and the linked device stays offline with no event."""
        if self._paired is None or self.mode != "pair" or self.fenced:
            return
        device, connect_by = self._paired
        if self._clock.monotonic() < connect_by:
            return
        self.log.warning("tenant %s: paired but not connected after %.0f s; resuming the device",
                         self.tenant, PAIRED_CONNECT_S)
        self._paired = (device, self._clock.monotonic() + PAIRED_CONNECT_S)
        self._detach()
        self._open("pair", device)
