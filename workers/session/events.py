"""WhatsApp events turned into state: a table from each event kind to its handler.

An event counts only if it comes from the current client (its token) while the
lease is valid; any other is dropped, and one seen after the lease went fences
the session.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from shared import owner_writes as writes
from shared.state_machine import LIVE_STATES, PairingStatus, SessionState, WriteResult
from shared.whatsapp.port import EventKind, WaEvent
from workers.session.messaging import MessagingMixin
from workers.session.pairing import PAIRED_CONNECT_S

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
#: Events after which the client cannot send (until CONNECTED comes again).
OFFLINE_EVENTS = (*FINAL_OUTCOMES, EventKind.DISCONNECTED, EventKind.CONNECT_FAILURE,
                  EventKind.PAIRING_TIMEOUT, EventKind.CLOSED)
QUIET_EVENTS = (EventKind.MESSAGE, EventKind.RECEIPT)
LOGGED_EVENT_FIELDS = ("reason", "detail", "index", "on_connect", "expire_s", "jid")


class EventsMixin(MessagingMixin):
    """The handlers of the current client's events (``HANDLERS``)."""

    def _on_event(self, token: int, event: WaEvent) -> None:
        if event.kind in SETTLING:
            self._settled.set()
        with self._lock:
            if not self._slot.is_current(token):
                last = event.kind is EventKind.CLOSED and self._slot.confirm_closed(token)
                if last and not self.fenced:
                    # The lease was kept only for this close (wants_session): the
                    # drain may release it now.
                    self._on_idle(self.tenant)
                return
            if not self._slot.lease_valid():
                self.fenced = True
                self._detach()
                return
            self._apply(event)

    def _apply(self, event: WaEvent) -> None:
        kind, data, now = event.kind, event.data, self._clock.time()
        # Never the data itself: a QR or pairing code links a device.
        safe = {k: v for k, v in data.items() if k in LOGGED_EVENT_FIELDS}
        # Messages and receipts come by the thousand a second across a worker's tenants,
        # and their metrics count them: a line each only when debugging.
        level = logging.DEBUG if kind in QUIET_EVENTS else logging.INFO
        self.log.log(level, "tenant %s: %s %s", self.tenant, kind.value, safe or "")
        if kind in COUNTED_EVENTS:
            self._observe_event(kind.value, data)
        if kind is EventKind.CONNECTED:
            self.online.set()
        elif kind in OFFLINE_EVENTS:
            self.online.clear()
        handler = HANDLERS.get(kind)
        if handler is not None:
            handler(self, event, now)

    # --- pairing --------------------------------------------------------------
    def _handle_qr(self, event: WaEvent, now: float) -> None:
        data = event.data
        expires_in = float(data.get("expires_in", 20))
        value = json.dumps({"code": data["code"], "index": int(data.get("index", 0)),
                            "expires_at": round(now + expires_in, 3)})
        self._write(writes.qr_shown(self.pairing_id, value, int(expires_in * 1000),
                                    first=int(data.get("index", 0)) == 0,
                                    since=self.pairing_started_at))
        if self.pair_phone and not self._pair_code_asked and self.handle is not None:
            # whatsmeow accepts PairPhone only once the first QR has arrived.
            self._pair_code_asked = True
            self.handle.request_pair_code(self.pair_phone)

    def _handle_pair_code(self, event: WaEvent, now: float) -> None:
        left = (self.pairing_deadline or 0) - self._clock.monotonic()
        value = json.dumps({"code": str(event.data["code"]), "expires_at": round(now + left, 3)})
        if left > 0:
            self._write(writes.pair_code_shown(value, int(left * 1000)))

    def _handle_pair_success(self, event: WaEvent, now: float) -> None:
        jid = str(event.data["jid"])
        self._paired = (jid, self._clock.monotonic() + PAIRED_CONNECT_S)
        self._write(writes.pair_succeeded(self.pairing_id, jid))

    def _handle_pairing_timeout(self, event: WaEvent, now: float) -> None:
        self._finish(SessionState.IDLE, "pairing_expired", event.data,
                     pairing_status=PairingStatus.EXPIRED)

    # --- the connection -------------------------------------------------------
    def _handle_connected(self, event: WaEvent, now: float) -> None:
        self._paired = None
        jid = str(event.data.get("jid") or "")
        if self.mode == "pair":
            # The deadline goes only once 'paired' is written: if Redis is away, the
            # deadline still ends the pairing (expired) rather than leaving it open.
            written = self._write(writes.paired(self.pairing_id, self._leases.owner_id, jid,
                                                f"{now:.3f}", since=self.pairing_started_at))
            self.pairing_deadline = None
            if written is not WriteResult.REFUSED:  # refused: the client is already dropped
                self.mode = "resume"
        else:
            self._write(writes.connected(self._leases.owner_id, jid))
        if self._on_connected is not None:
            self._on_connected(self.tenant, jid)

    def _handle_disconnected(self, event: WaEvent, now: float) -> None:
        if self.mode == "resume":
            self._write(writes.reconnecting(cause="dropped"))

    def _handle_keepalive_timeout(self, event: WaEvent, now: float) -> None:
        # whatsmeow forces a reconnect after keepalive failures without a
        # Disconnected event: the link is in doubt from the first timeout.
        if self.mode == "resume":
            self._write(writes.reconnecting(cause="keepalive"))

    def _handle_keepalive_restored(self, event: WaEvent, now: float) -> None:
        if self.mode == "resume":
            self._write(writes.link_restored())

    def _handle_temporary_ban(self, event: WaEvent, now: float) -> None:
        """``TemporaryBan{Code, Expire}``: back off until the expiry, then resume by itself.

        The owner keeps the lease and the tenant ``reconnecting`` (messages are still
        accepted and wait in the outbox: a send meets the ban and waits, it does not
        fail), closes the client, and the maintenance tick opens it again once the
        expiry has passed (``resume_after_ban``). A server still banning then says so
        again and the wait starts over; a new owner's take-over meets the ban the same
        way. During a pairing, or with no expiry, it ends the session as before.
        """
        expire_s = float(event.data.get("expire_s") or 0)
        if self.mode != "resume" or expire_s <= 0:
            self._handle_final(event, now)
            return
        self._detach()
        self.banned_until = self._clock.monotonic() + expire_s
        error = self._error("temporary_ban", "WhatsApp banned the account for now; sends "
                            "wait and the session resumes at the ban's expiry",
                            ban_code=event.data.get("code"), expire_s=expire_s,
                            until=round(now + expire_s, 3))
        self._write(writes.banned_for_now(error))

    # --- the end --------------------------------------------------------------
    def _handle_final(self, event: WaEvent, now: float) -> None:
        kind = event.kind
        state, code = FINAL_OUTCOMES[kind]
        device = (self._store.read(self.tenant)[0].get("device")
                  if kind is EventKind.LOGGED_OUT else None)
        self._finish(state, code, event.data, clear_device=kind is EventKind.LOGGED_OUT)
        if kind is EventKind.LOGGED_OUT:
            self._backend.delete_store(self.tenant, jid=device or None)

    def _handle_connect_failure(self, event: WaEvent, now: float) -> None:
        code = CONNECT_FAILURE_CODES.get(str(event.data.get("reason")), "connect_failure")
        self._finish(SessionState.FAILED, code, event.data)

    def _handle_closed(self, event: WaEvent, now: float) -> None:
        self._detach(close=False, closed=True)
        session, _ = self._store.read(self.tenant)
        if session.get("state") in LIVE_STATES:
            self._finish(SessionState.FAILED, "session_ended", event.data)
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
            self._unwritten_end = writes.session_ended(state, error, forget_device=clear_device)
            if not self._write_end():
                return  # the maintenance tick retries it (retry_unwritten_end)
        self._on_idle(self.tenant)


#: Each event kind's handler; a kind not listed changes nothing (it is only logged).
HANDLERS: dict[EventKind, Callable[[EventsMixin, WaEvent, float], None]] = {
    EventKind.QR: EventsMixin._handle_qr,
    EventKind.PAIR_CODE: EventsMixin._handle_pair_code,
    EventKind.PAIR_SUCCESS: EventsMixin._handle_pair_success,
    EventKind.PAIRING_TIMEOUT: EventsMixin._handle_pairing_timeout,
    EventKind.CONNECTED: EventsMixin._handle_connected,
    EventKind.DISCONNECTED: EventsMixin._handle_disconnected,
    EventKind.KEEPALIVE_TIMEOUT: EventsMixin._handle_keepalive_timeout,
    EventKind.KEEPALIVE_RESTORED: EventsMixin._handle_keepalive_restored,
    **{kind: EventsMixin._handle_final for kind in FINAL_OUTCOMES},
    EventKind.TEMPORARY_BAN: EventsMixin._handle_temporary_ban,
    EventKind.CONNECT_FAILURE: EventsMixin._handle_connect_failure,
    EventKind.CLOSED: EventsMixin._handle_closed,
    EventKind.MESSAGE: EventsMixin._handle_message,
    EventKind.RECEIPT: EventsMixin._handle_receipt,
}
