"""Taking a tenant over: what the previous owner left, and picking up from there."""

from __future__ import annotations

import enum

from shared import owner_writes as writes
from shared.state import StateSnapshot
from shared.state_machine import ACTIVE_PAIRING, PairingStatus, SessionState
from workers.session.core import SessionCore


class TakeOverPlan(enum.StrEnum):
    """What taking a tenant over does; computed once per claim (``take_over_plan``)."""

    NOTHING = ""  # the take-over changes nothing: a command taken with it stands
    FINISH = "finish"  # a scanned pairing: resume its new device
    END = "end"  # an unfinished pairing: end it (owner_lost)
    RESUME = "resume"  # a linked device: resume it

    @property
    def waits(self) -> bool:
        """True if the take-over opens a client and waits (up to a lease TTL) until it is
        connected."""
        return self in (TakeOverPlan.FINISH, TakeOverPlan.RESUME)


def take_over_plan(state: StateSnapshot) -> TakeOverPlan:
    """What taking over a tenant in ``state`` (its session and pairing hashes) does."""
    session, pairing = state
    current, device = session.get("state", SessionState.IDLE), session.get("device")
    status = pairing.get("status")
    if current == SessionState.PAIRING and status == PairingStatus.PAIR_SUCCESS and device:
        return TakeOverPlan.FINISH
    if current == SessionState.PAIRING and status in ACTIVE_PAIRING:
        return TakeOverPlan.END
    if current in (SessionState.CONNECTED, SessionState.RECONNECTING) and device:
        return TakeOverPlan.RESUME
    return TakeOverPlan.NOTHING


class TakeOverMixin(SessionCore):
    """The first step of a new owner's drain."""

    def on_claimed(self, state: StateSnapshot | None = None,
                   plan: TakeOverPlan | None = None) -> None:
        """Pick up where the previous owner stopped: end its pairing, resume a linked device.

        ``state``: the session and pairing hashes, if the caller has just read them;
        ``plan``: ``take_over_plan(state)``, if the caller has computed it.

        Runs as the first step of the tenant's (serialised) drain, before any command.
        The previous owner may be paused, not dead, with its connection still open at
        the server. So a linked device is resumed first and the drain waits until it
        is connected (or cannot be): the server then ends any older connection of the
        same device (``stream_replaced``), and no reset-then-pair that follows can put
        a new device online beside a lingering old one.
        """
        session, pairing = state = state or self._store.read(self.tenant)
        plan = take_over_plan(state) if plan is None else plan
        device = session.get("device", "")
        if plan is TakeOverPlan.FINISH:
            # The phone has scanned: the device exists. Finish by resuming it.
            with self._lock:
                self.pairing_id = pairing.get("id", "")
                self.pairing_started_at = float(pairing.get("started_at") or self._clock.time())
                remaining = float(pairing.get("deadline_at") or 0) - self._clock.time()
                self.pairing_deadline = (self._clock.monotonic()
                                         + max(remaining, self._settings.lease_ttl_s))
                self._write(writes.owner_recorded(self._leases.owner_id))
                opened = self._open("pair", device)
            if opened:
                self._settled.wait(self._settings.lease_ttl_s)
        elif plan is TakeOverPlan.END:
            self._end_pairing(
                pairing.get("id", ""), PairingStatus.FAILED, SessionState.IDLE,
                self._error("owner_lost", "the worker running this pairing stopped; pair again"),
            )
        elif plan is TakeOverPlan.RESUME:
            with self._lock:  # written before the client opens, so Connected lands last
                self._write(writes.reconnecting(self._leases.owner_id, cause="resumed"))
                opened = self._open("resume", device)
            if opened:
                self._settled.wait(self._settings.lease_ttl_s)
        self.taken_over = True
