"""One owned tenant: runs its commands in order and turns WhatsApp events into state.

A ``TenantSession`` exists only while its worker holds the tenant's lease.
Every state write carries the lease's fence, so events that arrive after the
lease was lost (a paused process, a late callback from a dead socket) change
nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from shared import metrics
from shared.clock import Clock
from shared.config import Settings
from shared.errors import WapairError, WhatsAppError
from shared.lease import HeldLease, LeaseKeeper
from shared.logging_setup import ContextLog
from shared.state import Command, SessionStore, StateSnapshot, error_json
from shared.state_machine import (
    ACTIVE_PAIRING,
    ENDED_PAIRING,
    LIVE_STATES,
    PairingStatus,
    SessionState,
    WriteResult,
)
from shared.whatsapp.port import EventKind, WaEvent, WhatsAppBackend, WhatsAppSession

log = logging.getLogger(__name__)

#: How the final events end a session: (state, last_error code).
FINAL_OUTCOMES = {
    EventKind.LOGGED_OUT: (SessionState.LOGGED_OUT, "logged_out"),
    EventKind.STREAM_REPLACED: (SessionState.FAILED, "stream_replaced"),
    EventKind.TEMPORARY_BAN: (SessionState.FAILED, "temporary_ban"),
    EventKind.CLIENT_OUTDATED: (SessionState.FAILED, "client_outdated"),
}
#: Events that settle a take-over's resume: connected, or it cannot connect.
SETTLING = (*FINAL_OUTCOMES, EventKind.CONNECTED, EventKind.CONNECT_FAILURE,
            EventKind.PAIRING_TIMEOUT, EventKind.CLOSED)
#: Events counted in wapair_whatsapp_events_total (conflicts and final events).
COUNTED_EVENTS = (*FINAL_OUTCOMES, EventKind.CONNECT_FAILURE, EventKind.KEEPALIVE_TIMEOUT)
#: last_error codes of CONNECT_FAILURE reasons; any other reason is connect_failure.
CONNECT_FAILURE_CODES = {
    "dial": "upstream_unreachable",
    "network": "upstream_unreachable",  # the link dropped during the QR phase
    "pair_code": "pair_code_failed",
    "passkey": "passkey_unsupported",
}
#: A device that paired but is not Connected this long after PairSuccess (whatsmeow's
#: reconnect after the 515 failed, which it only logs) is resumed by its owner.
PAIRED_CONNECT_S = 20.0
LOGGED_EVENT_FIELDS = ("reason", "detail", "index", "on_connect", "expire_s", "jid")


def take_over_plan(state: StateSnapshot) -> str:
    """What taking a tenant over does: 'finish' a scanned pairing (resume its new
    device), 'end' an unfinished one, 'resume' a linked device, or nothing ('')."""
    session, pairing = state
    current, device = session.get("state", SessionState.IDLE), session.get("device")
    status = pairing.get("status")
    if current == SessionState.PAIRING and status == PairingStatus.PAIR_SUCCESS and device:
        return "finish"
    if current == SessionState.PAIRING and status in ACTIVE_PAIRING:
        return "end"
    if current in (SessionState.CONNECTED, SessionState.RECONNECTING) and device:
        return "resume"
    return ""


def take_over_waits(state: StateSnapshot) -> bool:
    """True if taking over from ``state`` opens a client and waits (up to a lease TTL)
    until it is connected."""
    return take_over_plan(state) in ("finish", "resume")


class TenantSession:
    """The owner's view of one tenant: its lease, its live client and its pairing."""

    def __init__(
        self,
        lease: HeldLease,
        *,
        store: SessionStore,
        leases: LeaseKeeper,
        backend: WhatsAppBackend,
        settings: Settings,
        clock: Clock,
        on_idle: Callable[[str], None],
        on_connected: Callable[[str, str], None] | None = None,
    ) -> None:
        self.tenant = lease.tenant
        self.lease = lease
        self._store = store
        self._leases = leases
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._on_idle = on_idle
        self._on_connected = on_connected  # (tenant, jid): the recovery record's refresh
        self._lock = threading.RLock()
        self.handle: WhatsAppSession | None = None
        self._handle_token = 0
        self.mode: str | None = None  # "pair" or "resume" while a handle is open
        self.pairing_id = ""
        self.pairing_deadline: float | None = None  # monotonic
        self.pair_phone = ""  # digits of the number a phone-code pairing links (personal data)
        self._pair_code_asked = False
        self.pairing_started_at: float | None = None  # the API's clock, for the metrics
        self.fenced = False
        self.taken_over = False
        # A session's end (failed, logged_out) that Redis did not take: retried each tick.
        self._unwritten_end: dict[str, Any] | None = None
        self._settled = threading.Event()  # the take-over's resume connected or gave up
        # (device, monotonic deadline) between PairSuccess and Connected
        self._paired: tuple[str, float] | None = None
        self.log = ContextLog(log, lambda: {"tenant": self.tenant, "fence": self.lease.fence,
                                            "pairing_id": self.pairing_id or None})

    # --- lifecycle ------------------------------------------------------
    def on_claimed(self, state: StateSnapshot | None = None) -> None:
        """Pick up where the previous owner stopped: end its pairing, resume a linked device.

        ``state``: the session and pairing hashes, if the caller has just read them.

        Runs as the first step of the tenant's (serialised) drain, before any command.
        The previous owner may be paused, not dead, with its connection still open at
        the server. So a linked device is resumed first and the drain waits until it
        is connected (or cannot be): the server then ends any older connection of the
        same device (``stream_replaced``), and no reset-then-pair that follows can put
        a new device online beside a lingering old one.
        """
        session, pairing = state = state or self._store.read(self.tenant)
        plan, device = take_over_plan(state), session.get("device", "")
        if plan == "finish":
            # The phone has scanned: the device exists. Finish by resuming it.
            with self._lock:
                self.pairing_id = pairing.get("id", "")
                self.pairing_started_at = float(pairing.get("started_at") or self._clock.time())
                remaining = float(pairing.get("deadline_at") or 0) - self._clock.time()
                self.pairing_deadline = (self._clock.monotonic()
                                         + max(remaining, self._settings.lease_ttl_s))
                self._write(session={"owner": self._leases.owner_id})
                opened = self._open("pair", device)
            if opened:
                self._settled.wait(self._settings.lease_ttl_s)
        elif plan == "end":
            self._end_pairing(
                pairing.get("id", ""), PairingStatus.FAILED, SessionState.IDLE,
                self._error("owner_lost", "the worker running this pairing stopped; pair again"),
            )
        elif plan == "resume":
            with self._lock:  # written before the client opens, so Connected lands last
                self._write(session={"state": SessionState.RECONNECTING,
                                     "owner": self._leases.owner_id})
                opened = self._open("resume", device)
                metrics.reconnect("resumed")
            if opened:
                self._settled.wait(self._settings.lease_ttl_s)
        self.taken_over = True

    def run_command(self, command: Command,
                    state: StateSnapshot | None = None) -> None:
        """Carry out one command; stale and duplicate commands change nothing.

        ``state``: the session and pairing hashes read as the command was taken.
        """
        self.log.info("tenant %s: command %s (%s)", self.tenant, command.kind, command.id,
                      extra={"command": command.kind, "pairing_id": command.pairing_id or None})
        if command.kind == "pair":
            self._pair(command, state or self._store.read(self.tenant))
        elif command.kind == "reset":
            self._reset()
        elif command.kind == "logout":
            self._logout()
        elif command.kind == "resume":
            session, _ = self._store.read(self.tenant)
            if self.handle is None and session.get("device"):
                self._open("resume", session["device"])
        else:
            self.log.warning("tenant %s: unknown command kind %r dropped", self.tenant,
                             command.kind)

    def wants_session(self) -> bool:
        """True while the tenant needs this worker to keep its lease."""
        if self.handle is not None:
            return True
        session, _ = self._store.read(self.tenant)
        return session.get("state") in LIVE_STATES

    def retry_unwritten_end(self) -> None:
        """Write a session's end again if Redis was away when it happened.

        Without it the state would still say connected: this worker would keep the
        lease with no client (wants_session), and nobody else could take the tenant.
        """
        with self._lock:
            if self._unwritten_end is None or not self._write_end():
                return
        self._on_idle(self.tenant)

    def _write_end(self) -> bool:
        changes = self._unwritten_end
        if changes is None:
            return True
        try:
            self._write(**changes)
        except WapairError as e:
            self.log.warning("tenant %s: could not record the session's end yet (%s); retrying",
                             self.tenant, e)
            return False
        self._unwritten_end = None
        return True

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
                self._write(session={"state": SessionState.RECONNECTING, "owner": ""})
            self.fenced = True
            self._detach()
            return handle

    # --- commands ---------------------------------------------------------
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
                written = self._write(
                    session={"owner": self._leases.owner_id},
                    pairing={"status": PairingStatus.STARTING}, pairing_id=command.pairing_id,
                )
            except WapairError:
                self._detach()  # the command stays in flight and runs again
                raise
            if written is WriteResult.PAIRING_SKIPPED:  # another pairing replaced it
                self.pairing_id, self.pairing_deadline = "", None
                self._detach()

    def _reset(self) -> None:
        self._close_and_wait()
        session, pairing = self._store.read(self.tenant)
        if (session.get("state") == SessionState.PAIRING
                and pairing.get("status") not in ENDED_PAIRING):
            self._end_pairing(pairing.get("id", ""), PairingStatus.CANCELLED, SessionState.IDLE,
                              "")
        else:
            self._write(session={"state": SessionState.IDLE, "last_error": ""}, qr="del")

    def _logout(self) -> None:
        with self._lock:
            handle, never_linked = self.handle, self.mode == "pair" and self._paired is None
            self._detach(close=False)
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
                handle.wait_closed(10)
        session, pairing = self._store.read(self.tenant)
        self._backend.delete_store(self.tenant, jid=session.get("device") or None)
        if pairing.get("status") in (PairingStatus.QUEUED, *ACTIVE_PAIRING):
            self._end_pairing(pairing.get("id", ""), PairingStatus.CANCELLED, SessionState.IDLE,
                              "")
        self._write(session={"state": SessionState.IDLE, "device": "", "last_error": ""},
                    qr="del")

    # --- the client ---------------------------------------------------------
    def _open(self, mode: str, jid: str | None) -> bool:
        """Open a client unless the lease is gone; True if one was opened."""
        with self._lock:
            if self.fenced or not self._leases.is_valid(self.tenant, self.lease.fence):
                return False
            self._handle_token += 1
            token = self._handle_token
            self.mode = mode
            self.handle = self._backend.open_session(
                self.tenant, jid=jid, on_event=lambda ev: self._on_event(token, ev),
                may_connect=lambda: self._may_connect(token),
                lease_left=lambda: self._lease_left(token),
            )
            return True

    def _may_connect(self, token: int) -> bool:
        """Asked by the adapter right before each dial: is this client still ours to run?

        Without the session's lock: the adapter asks on its I/O loop, which must not
        wait while a command holds the lock across a Redis write. Each read is atomic,
        and a fence that lands just after the answer is caught as before: the fence
        closes the client, and every event it sends is checked against the token.
        """
        return (token == self._handle_token and not self.fenced
                and self._leases.is_valid(self.tenant, self.lease.fence))

    def _lease_left(self, token: int) -> float:
        """Seconds this client may still run under the lease (see ``LeaseKeeper.safe_left``)."""
        if token != self._handle_token or self.fenced:
            return 0.0
        return self._leases.safe_left(self.tenant, self.lease.fence)

    def _detach(self, close: bool = True) -> WhatsAppSession | None:
        """Forget the current client (its later events are ignored) and close it."""
        with self._lock:
            handle, self.handle, self.mode = self.handle, None, None
            self._handle_token += 1
        if handle is not None and close:
            handle.close()
        return handle

    def _close_and_wait(self) -> None:
        handle = self._detach()
        if handle is not None and not handle.wait_closed(10):
            self.log.error("tenant %s: old client did not stop within 10 s", self.tenant)

    def _on_event(self, token: int, event: WaEvent) -> None:
        if event.kind in SETTLING:
            self._settled.set()
        with self._lock:
            if token != self._handle_token:
                return
            if self.fenced or not self._leases.is_valid(self.tenant, self.lease.fence):
                self.fenced = True
                self._detach()
                return
            self._apply(event)

    def _apply(self, event: WaEvent) -> None:
        kind, data, now = event.kind, event.data, self._clock.time()
        # Never the data itself: a QR or pairing code links a device.
        safe = {k: v for k, v in data.items() if k in LOGGED_EVENT_FIELDS}
        self.log.info("tenant %s: %s %s", self.tenant, kind.value, safe or "")
        if kind in COUNTED_EVENTS:
            metrics.whatsapp_event(kind.value, data)
        if kind is EventKind.QR:
            if int(data.get("index", 0)) == 0:
                metrics.observe_pairing_step("qr", self.pairing_started_at, now)
            expires_in = float(data.get("expires_in", 20))
            value = json.dumps({"code": data["code"], "index": int(data.get("index", 0)),
                                "expires_at": round(now + expires_in, 3)})
            self._write(pairing={"status": PairingStatus.QR}, pairing_id=self.pairing_id,
                        qr={"value": value, "ttl_ms": int(expires_in * 1000)})
            if self.pair_phone and not self._pair_code_asked and self.handle is not None:
                # whatsmeow accepts PairPhone only once the first QR has arrived.
                self._pair_code_asked = True
                self.handle.request_pair_code(self.pair_phone)
        elif kind is EventKind.PAIR_CODE:
            left = (self.pairing_deadline or 0) - self._clock.monotonic()
            value = json.dumps({"code": str(data["code"]), "expires_at": round(now + left, 3)})
            if left > 0:
                self._write(pair_code={"value": value, "ttl_ms": int(left * 1000)})
        elif kind is EventKind.PAIR_SUCCESS:
            self._paired = (str(data["jid"]), self._clock.monotonic() + PAIRED_CONNECT_S)
            self._write(session={"device": str(data["jid"])},
                        pairing={"status": PairingStatus.PAIR_SUCCESS},
                        pairing_id=self.pairing_id, qr="del")
        elif kind is EventKind.CONNECTED:
            self._paired = None
            update: dict[str, str] = {"state": SessionState.CONNECTED, "last_error": "",
                                      "owner": self._leases.owner_id}
            if data.get("jid"):
                update["device"] = str(data["jid"])
            if self.mode == "pair":
                # The deadline goes only once 'paired' is written: if Redis is away, the
                # deadline still ends the pairing (expired) rather than leaving it open.
                written = self._write(session=update, pairing={"status": PairingStatus.PAIRED,
                                                               "ended_at": f"{now:.3f}"},
                                      pairing_id=self.pairing_id, qr="del")
                self.pairing_deadline = None
                if written is not WriteResult.REFUSED:  # refused: the client is already dropped
                    self.mode = "resume"
                if written is WriteResult.APPLIED:
                    metrics.pairing_ended(PairingStatus.PAIRED)
                    metrics.observe_pairing_step("connected", self.pairing_started_at, now)
            else:
                self._write(session=update)
            if self._on_connected is not None:
                self._on_connected(self.tenant, update.get("device", ""))
        elif kind is EventKind.DISCONNECTED:
            if self.mode == "resume":
                self._write(session={"state": SessionState.RECONNECTING})
                metrics.reconnect("dropped")
        elif kind is EventKind.KEEPALIVE_TIMEOUT:
            # whatsmeow forces a reconnect after keepalive failures without a
            # Disconnected event: the link is in doubt from the first timeout.
            if self.mode == "resume":
                self._write(session={"state": SessionState.RECONNECTING})
        elif kind is EventKind.KEEPALIVE_RESTORED:
            if self.mode == "resume":
                self._write(session={"state": SessionState.CONNECTED, "last_error": ""})
        elif kind in FINAL_OUTCOMES:
            state, code = FINAL_OUTCOMES[kind]
            device = (self._store.read(self.tenant)[0].get("device")
                      if kind is EventKind.LOGGED_OUT else None)
            self._finish(state, code, data, clear_device=kind is EventKind.LOGGED_OUT)
            if kind is EventKind.LOGGED_OUT:
                self._backend.delete_store(self.tenant, jid=device or None)
        elif kind is EventKind.PAIRING_TIMEOUT:
            self._finish(SessionState.IDLE, "pairing_expired", data,
                         pairing_status=PairingStatus.EXPIRED)
        elif kind is EventKind.CONNECT_FAILURE:
            code = CONNECT_FAILURE_CODES.get(str(data.get("reason")), "connect_failure")
            self._finish(SessionState.FAILED, code, data)
        elif kind is EventKind.CLOSED:
            self._detach(close=False)
            session, _ = self._store.read(self.tenant)
            if session.get("state") in LIVE_STATES:
                self._finish(SessionState.FAILED, "session_ended", data)
            self._on_idle(self.tenant)

    def _finish(self, state: SessionState, code: str, data: dict[str, Any], *,
                clear_device: bool = False,
                pairing_status: PairingStatus = PairingStatus.FAILED) -> None:
        """A final event: close the client for good and record why."""
        message = str(data.get("message") or data.get("detail") or code.replace("_", " "))
        extra = {k: v for k, v in data.items() if k in ("reason", "detail", "expire_s")}
        if "code" in data:  # a ban's code: last_error's own "code" is ours (temporary_ban)
            extra["ban_code"] = data["code"]
        was_pairing = self.pairing_deadline is not None or self.mode == "pair"
        self._detach()
        error = self._error(code, message, **extra)
        if was_pairing:
            # As in check_deadline: the deadline is dropped only once the end is written,
            # so a write that meets a Redis outage is retried by the deadline (expired).
            self._end_pairing(self.pairing_id, pairing_status, state, error)
            self.pairing_deadline = None
        else:
            session = {"state": state, "last_error": error}
            if clear_device:
                session["device"] = ""
            self._unwritten_end = {"session": session, "qr": "del"}
            if not self._write_end():
                return  # the maintenance tick retries it (retry_unwritten_end)
        self._on_idle(self.tenant)

    def _error(self, code: str, message: str, **extra: Any) -> str:
        return error_json(code, message, self._clock.time(), **extra)

    def _end_pairing(self, pairing_id: str, status: PairingStatus, state: SessionState,
                     error: str) -> None:
        now = f"{self._clock.time():.3f}"
        if self._write(session={"state": state, "last_error": error},
                       pairing={"status": status, "ended_at": now}, pairing_id=pairing_id,
                       qr="del") is WriteResult.APPLIED:
            metrics.pairing_ended(status, error)

    def _write(self, **changes: Any) -> WriteResult:
        """A fenced write; one refused (an older fence) drops the session."""
        if self.fenced:
            return WriteResult.REFUSED
        result = self._store.fenced_write(self.tenant, self.lease.fence, **changes)
        if result is WriteResult.REFUSED:
            self.log.warning("tenant %s: fence %s is stale; dropping the session",
                             self.tenant, self.lease.fence)
            self.fenced = True
            self._detach()
        return result
