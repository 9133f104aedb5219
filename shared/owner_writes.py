"""The tenant owner's writes, by name: each is one move of ``shared/state_machine.py``.

The owner (``workers/session/``) changes a tenant's session and pairing only
through the functions below, and ``SessionStore.apply`` runs the result with
its fence (``fenced_write.lua``, which applies any change it is given, so that
every owner move costs one script and one round trip). A name says which move
it is, and building one checks that the state or status it writes is the
target of an owner move in ``SESSION_MOVES`` / ``PAIRING_MOVES``: a new write
that the table does not list fails at once, in the tests, not in Redis.

Where a move starts is not checked here (the owner knows it only from its own
last read); ``tests/shared/test_state_machine.py`` checks the Lua side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.state_machine import (
    OWNER,
    PAIRING_MOVES,
    SESSION_MOVES,
    PairingStatus,
    SessionState,
)

#: States and statuses the owner may write (targets of its moves).
OWNER_STATES = frozenset(m.target for m in SESSION_MOVES if m.by == OWNER)
OWNER_STATUSES = frozenset(m.target for m in PAIRING_MOVES if m.by == OWNER)


@dataclass(frozen=True)
class OwnerWrite:
    """One named change of a tenant's keys, as ``fenced_write.lua`` takes it.

    ``session`` and ``pairing`` are fields to set; ``pairing_id`` limits the pairing
    part to that pairing; ``qr`` and ``pair_code`` are ``{"value", "ttl_ms"}`` or
    ``"del"``.
    """

    name: str
    session: dict[str, str] = field(default_factory=dict)
    pairing: dict[str, str] = field(default_factory=dict)
    pairing_id: str | None = None
    qr: dict[str, Any] | str | None = None
    pair_code: dict[str, Any] | None = None
    # For observers only (``workers/session/observers.py``), never written:
    cause: str = ""  # why: "dropped", "resumed", "first" (the first QR), ...
    since: float | None = None  # the pairing's start on the API's clock, to time a step

    def __post_init__(self) -> None:
        state, status = self.session.get("state"), self.pairing.get("status")
        if state is not None and state not in OWNER_STATES:
            raise ValueError(f"{self.name}: the owner has no move to state {state!r}")
        if status is not None and status not in OWNER_STATUSES:
            raise ValueError(f"{self.name}: the owner has no move to pairing status {status!r}")

    def changes(self) -> dict[str, Any]:
        """The keyword arguments of ``SessionStore.fenced_write``."""
        out: dict[str, Any] = {}
        if self.session:
            out["session"] = dict(self.session)
        if self.pairing:
            out["pairing"] = dict(self.pairing)
            out["pairing_id"] = self.pairing_id
        if self.qr is not None:
            out["qr"] = self.qr
        if self.pair_code is not None:
            out["pair_code"] = self.pair_code
        return out


def _ttl(value: str, ttl_ms: int) -> dict[str, Any]:
    return {"value": value, "ttl_ms": ttl_ms}


# --- ownership ------------------------------------------------------------------
def owner_recorded(owner: str) -> OwnerWrite:
    """This worker owns the tenant now (a take-over that finishes a pairing)."""
    return OwnerWrite("owner_recorded", session={"owner": owner})


# --- a pairing ------------------------------------------------------------------
def pairing_started(pairing_id: str, owner: str) -> OwnerWrite:
    """queued -> starting: the pair command opened a client."""
    return OwnerWrite("pairing_started", session={"owner": owner},
                      pairing={"status": PairingStatus.STARTING}, pairing_id=pairing_id)


def qr_shown(pairing_id: str, value: str, ttl_ms: int, *, first: bool = False,
             since: float | None = None) -> OwnerWrite:
    """starting/qr -> qr: a QR code, the ``first`` or a rotation."""
    return OwnerWrite("qr_shown", pairing={"status": PairingStatus.QR}, pairing_id=pairing_id,
                      qr=_ttl(value, ttl_ms), cause="first" if first else "", since=since)


def pair_code_shown(value: str, ttl_ms: int) -> OwnerWrite:
    """A phone pairing code (the status stays where it is)."""
    return OwnerWrite("pair_code_shown", pair_code=_ttl(value, ttl_ms))


def pair_succeeded(pairing_id: str, jid: str) -> OwnerWrite:
    """qr -> pair_success: the phone scanned; the device exists."""
    return OwnerWrite("pair_succeeded", session={"device": jid},
                      pairing={"status": PairingStatus.PAIR_SUCCESS}, pairing_id=pairing_id,
                      qr="del")


def pairing_ended(pairing_id: str, status: PairingStatus, state: SessionState, error: str,
                  ended_at: str) -> OwnerWrite:
    """An open pairing ends (expired, cancelled, failed) and the session settles."""
    return OwnerWrite("pairing_ended", session={"state": state, "last_error": error},
                      pairing={"status": status, "ended_at": ended_at}, pairing_id=pairing_id,
                      qr="del")


# --- the connection -------------------------------------------------------------
def _connected_fields(owner: str, jid: str) -> dict[str, str]:
    fields = {"state": SessionState.CONNECTED, "last_error": "", "owner": owner}
    if jid:
        fields["device"] = jid
    return fields


def paired(pairing_id: str, owner: str, jid: str, ended_at: str, *,
           since: float | None = None) -> OwnerWrite:
    """pair_success -> paired and the session connected (Connected after the 515)."""
    return OwnerWrite("paired", session=_connected_fields(owner, jid),
                      pairing={"status": PairingStatus.PAIRED, "ended_at": ended_at},
                      pairing_id=pairing_id, qr="del", since=since)


def connected(owner: str, jid: str) -> OwnerWrite:
    """A linked device is connected (a resume or a reconnect)."""
    return OwnerWrite("connected", session=_connected_fields(owner, jid))


def link_restored() -> OwnerWrite:
    """reconnecting -> connected: a keepalive answered again."""
    return OwnerWrite("link_restored",
                      session={"state": SessionState.CONNECTED, "last_error": ""})


def reconnecting(owner: str | None = None, *, cause: str = "") -> OwnerWrite:
    """The link is in doubt or being re-made; ``owner`` is set (a take-over) or cleared ("").

    ``cause``: ``dropped`` (the socket dropped), ``resumed`` (a new owner resumes the
    device), ``keepalive`` or ``shutdown``.
    """
    session: dict[str, str] = {"state": SessionState.RECONNECTING}
    if owner is not None:
        session["owner"] = owner
    return OwnerWrite("reconnecting", session=session, cause=cause)


def banned_for_now(error: str) -> OwnerWrite:
    """A temporary ban while connected: reconnecting, and why, until the ban's expiry."""
    return OwnerWrite("banned_for_now",
                      session={"state": SessionState.RECONNECTING, "last_error": error},
                      cause="temporary_ban")


def session_ended(state: SessionState, error: str, *, forget_device: bool = False) -> OwnerWrite:
    """The session settles outside a pairing: a final event, a reset or a logout."""
    session = {"state": state, "last_error": error}
    if forget_device:
        session["device"] = ""
    return OwnerWrite("session_ended", session=session, qr="del")
