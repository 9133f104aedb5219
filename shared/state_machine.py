"""The tenant session state machine: its states, its pairing statuses, and who moves them.

A tenant's ``wa:{t}:session`` hash holds a ``state`` (``SessionState``) and its
``wa:{t}:pairing`` hash a ``status`` (``PairingStatus``). The values are the
strings Redis holds; both enums are ``StrEnum``, so a member compares equal to
its string and is written as it.

The tables below list every move and who makes it: a Lua script of
``shared/lua`` (named by its file) or the tenant's owner (``OWNER``, through the
named writes of ``shared/owner_writes.py``, which check their target state against
these tables when built, and ``fenced_write.lua`` applies).
``tests/shared/test_state_machine.py`` holds the Lua scripts and the workers' code
against them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SessionState(enum.StrEnum):
    """The ``state`` field of a tenant's session hash (a missing hash reads as idle)."""

    IDLE = "idle"
    PAIRING = "pairing"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"  # stream_replaced, a ban, an outdated client, a connect failure
    LOGGED_OUT = "logged_out"  # the device was removed: its store is deleted


class PairingStatus(enum.StrEnum):
    """The ``status`` field of a tenant's pairing hash."""

    QUEUED = "queued"  # accepted by the API, the pair command waits for the owner
    STARTING = "starting"  # the owner opened a client
    QR = "qr"  # a QR code is shown
    PAIR_SUCCESS = "pair_success"  # the phone scanned: the device exists
    PAIRED = "paired"  # connected after the 515 reconnect
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WriteResult(enum.IntEnum):
    """What a fenced write did; the values are ``fenced_write.lua``'s reply."""

    REFUSED = 0  # an older fence: the writer lost its lease, nothing was written
    APPLIED = 1
    PAIRING_SKIPPED = 2  # applied except the pairing part, which was for another pairing


#: States in which the tenant wants a live session (someone must own it).
LIVE_STATES = frozenset({SessionState.PAIRING, SessionState.CONNECTED,
                         SessionState.RECONNECTING})
#: States a pairing can start from (``begin_pairing.lua``; a missing state is idle).
SETTLED_STATES = frozenset(SessionState) - LIVE_STATES
#: A pairing the owner runs: a client is open for it.
ACTIVE_PAIRING = (PairingStatus.STARTING, PairingStatus.QR, PairingStatus.PAIR_SUCCESS)
#: A pairing that is over; the next one starts at ``queued``.
ENDED_PAIRING = frozenset({PairingStatus.PAIRED, PairingStatus.EXPIRED, PairingStatus.FAILED,
                           PairingStatus.CANCELLED})

#: Who makes a move that is not a Lua script of its own: the tenant's owner
#: (``workers/session/``), through ``fenced_write.lua``.
OWNER = "owner"


@dataclass(frozen=True)
class Move:
    """One kind of move: from any of ``sources`` to ``target``, made by ``by``, on ``why``."""

    sources: frozenset[str]
    target: str
    by: str
    why: str


def _move(sources: frozenset[SessionState] | frozenset[PairingStatus] | tuple[str, ...],
          target: str, by: str, why: str) -> Move:
    return Move(frozenset(sources), target, by, why)


_S, _P = SessionState, PairingStatus
_ALL_STATES = frozenset(SessionState)
_OPEN_PAIRING = frozenset({_P.QUEUED, *ACTIVE_PAIRING})

SESSION_MOVES: tuple[Move, ...] = (
    _move(SETTLED_STATES, _S.PAIRING, "begin_pairing.lua", "POST /pair accepted"),
    _move(SETTLED_STATES, _S.RECONNECTING, "enqueue_command.lua",
          "POST /resume of a linked device"),
    _move((_S.PAIRING,), _S.IDLE, "cleanup_tenant.lua",
          "beat: a pairing with no owner is past its deadline"),
    _move((_S.IDLE,), _S.RECONNECTING, "restore_tenant.lua",
          "Redis lost its data: a live tenant is re-seeded from a worker's memory"),
    _move((_S.IDLE,), _S.IDLE, "restore_tenant.lua",
          "Redis lost its data: an idle tenant is re-seeded"),
    _move((_S.PAIRING,), _S.IDLE, OWNER,
          "a pairing ends: expired, cancelled (reset, logout, shutdown), owner_lost"),
    _move(LIVE_STATES, _S.CONNECTED, OWNER, "Connected; a keepalive restored"),
    _move((_S.CONNECTED, _S.RECONNECTING), _S.RECONNECTING, OWNER,
          "a take-over resumes the device; Disconnected; a keepalive timeout; shutdown; "
          "a temporary ban (until its expiry)"),
    _move(LIVE_STATES, _S.FAILED, OWNER,
          "stream_replaced, a ban with no expiry, an outdated client, a connect failure, "
          "the client closed"),
    _move(LIVE_STATES, _S.LOGGED_OUT, OWNER, "LoggedOut: the device was removed"),
    _move(_ALL_STATES, _S.IDLE, OWNER, "reset, logout; a pairing timeout while resuming"),
)

PAIRING_MOVES: tuple[Move, ...] = (
    # A new pairing replaces the pairing hash, whatever it held (or none).
    _move(ENDED_PAIRING, _P.QUEUED, "begin_pairing.lua", "POST /pair accepted"),
    _move(_OPEN_PAIRING, _P.EXPIRED, "cleanup_tenant.lua",
          "beat: a pairing with no owner is past its deadline"),
    _move((_P.QUEUED,), _P.STARTING, OWNER, "the pair command opened a client"),
    _move((_P.STARTING, _P.QR), _P.QR, OWNER, "a QR code (the first, then each rotation)"),
    _move((_P.QR,), _P.PAIR_SUCCESS, OWNER, "PairSuccess: the phone scanned"),
    _move((_P.PAIR_SUCCESS,), _P.PAIRED, OWNER, "Connected after the 515 reconnect"),
    _move(_OPEN_PAIRING, _P.EXPIRED, OWNER, "the deadline passed; a pairing timeout"),
    _move(ACTIVE_PAIRING, _P.FAILED, OWNER,
          "a final event or connect failure while pairing; owner_lost at a take-over"),
    _move(_OPEN_PAIRING, _P.CANCELLED, OWNER, "reset, logout, the worker shutting down"),
)


def session_move_allowed(source: str, target: str, by: str = OWNER) -> bool:
    """True if ``by`` may move a session from ``source`` to ``target`` (see SESSION_MOVES)."""
    return any(source in m.sources and target == m.target and by == m.by for m in SESSION_MOVES)


def pairing_move_allowed(source: str, target: str, by: str = OWNER) -> bool:
    """True if ``by`` may move a pairing from ``source`` to ``target`` (see PAIRING_MOVES)."""
    return any(source in m.sources and target == m.target and by == m.by for m in PAIRING_MOVES)


class MessageStatus(enum.StrEnum):
    """Where an outbound message is (``shared/lua/message_update.lua`` makes every move).

    queued -> sending (the owner, fenced, before the client gets it) -> sent (WhatsApp
    took it) -> delivered -> read (receipts); queued -> failed (it cannot be sent);
    sending -> failed (the client refused it), unknown (its owner died or lost the
    answer: never resent) or queued (``at_least_once``, or surely not sent).
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    UNKNOWN = "unknown"
