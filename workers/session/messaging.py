"""Messages through the owned session: the send command, receipts, inbound messages.

Sends run on the tenant's drain, one at a time, like every command, and only here,
on the lease holder. At most once: the message is recorded ``sending`` under the
fence *before* the client gets it; a send command found with its message already
``sending`` is one whose owner died (or was fenced) in between, so it ends
``unknown`` and is never sent again, unless the message asked for ``at_least_once``.
That leaves one message per tenant in the window, the one being handed over.

Inbound messages and receipts are recorded once (the Lua script dedupes on our id,
derived from WhatsApp's) and only then acknowledged to the server, which offers
what was not acknowledged again on the next connection: at least once.

Over 300 lines: the send's two paths (the connected one that records ``sending`` in
the step reading the record, and the careful one), its outcomes, receipts and
inbound records share the at-most-once bookkeeping (the early receipts, the own
sends' ids) and read each other's state under the session lock.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from shared.errors import WapairError, WhatsAppError
from shared.messages import SendingNotReplicated
from shared.outbound import OutboundPolicy
from shared.state import Command
from shared.state_machine import LIVE_STATES, MessageStatus
from shared.whatsapp.port import EventKind, WaEvent
from workers.session.core import SessionCore

#: How long a send waits for the client to be connected before it is put back.
CONNECT_WAIT_S = 5.0
MEDIA_FETCH_TIMEOUT_S = 10.0
EARLY_RECEIPTS_MAX = 1000
#: How many of its own sends a session remembers for their receipts (older ones are
#: looked up in the Redis index, as a previous owner's are).
SENT_IDS_MAX = 64
_M = MessageStatus
_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


class SendDeferred(WapairError):
    """Raised when a send cannot run now (no connected client yet); it stays in flight."""

    code = "send_deferred"


class SendPaced(WapairError):
    """Raised when a send is not due yet (pacing): it stays in flight and its drain runs
    again at ``at`` (monotonic), in its place: nothing queued behind it goes first."""

    code = "send_paced"

    def __init__(self, at: float) -> None:
        super().__init__("the tenant's next send is not due yet")
        self.at = at


def inbound_id(wa_message_id: str) -> str:
    """Our stable id of an inbound message: the same for every delivery of it."""
    return "in_" + _UNSAFE.sub("-", wa_message_id)[:100]


class MessagingMixin(SessionCore):
    """Sending a message (the ``send`` command) and recording what comes in."""

    # --- the send command ----------------------------------------------------
    def _send(self, command: Command) -> None:
        handle = self._ready_handle()
        if handle is None:
            self._send_checked(self._messages.read(self.tenant, command.message_id))
            return
        # The usual case, connected: 'sending' is recorded (a text message still queued)
        # in the step that reads the record, one round trip fewer. Anything else is left
        # as it was and takes the careful way from the record that step returned.
        self._pace()
        started = time.monotonic()
        if self.fenced:
            return
        try:
            result, record = self._messages.begin_send(self.tenant, self.lease.fence,
                                                       command.message_id,
                                                       sending_at=f"{self._clock.time():.3f}")
        except SendingNotReplicated:
            self._put_back({"id": command.message_id})
            raise
        if result == 1:
            record["status"] = _M.SENDING
            self._hand_over(handle, record, self._content(record), started)
        elif result == 2:
            self._send_checked(record, paced=True)
        elif result == 0:
            self._fenced_here()

    def _send_checked(self, record: dict[str, str], *, paced: bool = False) -> None:
        """The send from the record read: every check before 'sending' is recorded."""
        if not record:
            return  # expired: nothing to send
        if record.get("status") == _M.SENDING:
            self._cut_short(record)
        if record.get("status") != _M.QUEUED:
            return  # finished: a duplicate of a command that already ran
        if self.banned_until is not None:
            # Paused, not failed: the session resumes by itself at the ban's expiry.
            raise SendDeferred("the account is banned for now; the send waits for the "
                               "ban's expiry")
        if not self.online.is_set():
            session, _ = self._store.read(self.tenant)
            if session.get("state") not in LIVE_STATES:
                self._move(record, _M.FAILED, (_M.QUEUED,), error=self._error(
                    "not_connected", f"the tenant is {session.get('state') or 'idle'}"))
                self._observe_message(_M.FAILED)
                return
        handle = self._connected_handle()
        if handle is None:  # reconnecting: the next mailbox check runs it again
            raise SendDeferred("no connected client yet; the send waits")
        if not paced:
            self._pace()  # before a media fetch, which a send put off would repeat
        try:
            content = self._content(record)
        except WhatsAppError as e:
            self._move(record, _M.FAILED, (_M.QUEUED,),
                       error=self._error("media_fetch_failed", str(e)))
            self._observe_message(_M.FAILED)
            return
        started = time.monotonic()
        try:
            if not self._move(record, _M.SENDING, (_M.QUEUED,),
                              sending_at=f"{self._clock.time():.3f}"):
                return
        except SendingNotReplicated:
            self._put_back(record)
            raise
        self._hand_over(handle, record, content, started)

    def _put_back(self, record: dict[str, str]) -> None:
        """'sending' reached no replica: back to 'queued', not handed over; the command
        is cut short and runs again. Whichever of the two a promotion keeps, the
        message is not sent twice ('sending' kept: the next owner calls it unknown)."""
        try:
            self._move(record, _M.QUEUED, (_M.SENDING,), even_if_fenced=True)
        except WapairError:
            pass  # Redis away: the record says 'sending' or 'queued', both safe

    def _pace(self) -> None:
        """Go on if the tenant's next send is due, else put it off (``SendPaced``);
        before anything is recorded, so a send put off is simply run again."""
        left = self._pacer.due_in()
        if left > 0:
            raise SendPaced(self._clock.monotonic() + left)
        self._pacer.sent()

    def _hand_over(self, handle: Any, record: dict[str, str], content: dict[str, Any],
                   started: float) -> None:
        """Give the client a message recorded 'sending', then record what it answered."""
        try:
            wa_id = handle.send_message(record["chat"], content)
        except WhatsAppError as e:
            self._send_failed(record, e)
            return
        early = self._record_sent(record, wa_id)
        self._observe_message(_M.SENT, time.monotonic() - started)
        if early is not None:
            with self._lock:
                self._apply_receipt(WaEvent(EventKind.RECEIPT, early))

    def _record_sent(self, record: dict[str, str], wa_id: str) -> dict[str, Any] | None:
        """Record 'sent'; the receipt that came before it, if one did."""
        with self._lock:  # a receipt handler checks the index and parks under this lock
            # Even once fenced (a warm shutdown's handover came during the call): WhatsApp
            # took it, and the fence in Redis still refuses the write if the lease has
            # gone to another owner. Skipped, the next owner would record 'unknown'.
            if self._move(record, _M.SENT, (_M.SENDING,), wa_message_id=wa_id,
                          sent_at=f"{self._clock.time():.3f}", even_if_fenced=True):
                self._remember_sent(wa_id, record["id"])
            return self._early_receipts.pop(wa_id, None)

    def _cut_short(self, record: dict[str, str]) -> None:
        """A message found 'sending': its owner died (or was fenced) after handing it to
        the client and before the answer was recorded. Never resent, unless it asked."""
        if record.get("retry") == "at_least_once":
            self._move(record, _M.QUEUED, (_M.SENDING,))
            return
        self._move(record, _M.UNKNOWN, (_M.SENDING,), error=self._error(
            "outcome_unknown", "the worker sending it stopped before WhatsApp's answer "
            "was recorded; it may or may not have been delivered, and is not resent"))
        self._observe_message(_M.UNKNOWN)

    def _send_failed(self, record: dict[str, str], error: WhatsAppError) -> None:
        """The client did not take the message: failed if it said so, else unknown.

        Each outcome is recorded even if the session was fenced meanwhile (a handover),
        as ``sent`` is: it is the truth, and Redis's fence still decides."""
        if not getattr(error, "answered", True):
            # No answer (the host died, or was too slow): WhatsApp may have it.
            self._move(record, _M.UNKNOWN, (_M.SENDING,), even_if_fenced=True,
                       error=self._error("outcome_unknown", str(error)))
            self._observe_message(_M.UNKNOWN)
            return
        if "not connected" in str(error):  # surely not sent: wait for the connection
            # Left 'sending' (a handover closed the client under it), the next owner
            # would call it unknown.
            self._move(record, _M.QUEUED, (_M.SENDING,), even_if_fenced=True)
            raise SendDeferred("the client lost its connection; the send waits")
        self._move(record, _M.FAILED, (_M.SENDING,), even_if_fenced=True,
                   error=self._error("send_failed", str(error)))
        self._observe_message(_M.FAILED)

    def _move(self, record: dict[str, str], status: str, from_statuses: tuple[str, ...],
              *, even_if_fenced: bool = False, **fields: str) -> bool:
        """A fenced move of the message; True if applied. A stale fence drops the session.
        ``even_if_fenced``: try it after the session was fenced here too (Redis decides)."""
        if self.fenced and not even_if_fenced:
            return False
        result, _ = self._messages.move(self.tenant, self.lease.fence, record["id"], status,
                                        from_statuses, **fields)
        if result == 0:
            self._fenced_here()
        if result == 1:
            record["status"] = status
        return result == 1

    def _fenced_here(self) -> None:
        """Redis refused this session's fence: another owner has the tenant."""
        self.log.warning("tenant %s: fence %s is stale; dropping the session",
                         self.tenant, self.lease.fence)
        self.fenced = True
        self._detach()

    def _ready_handle(self) -> Any:
        """The client if it is connected now and nothing holds sends back, else None."""
        if self.banned_until is not None or not self.online.is_set():
            return None
        with self._lock:
            return self.handle if self.mode == "resume" and not self.fenced else None

    def _connected_handle(self) -> Any:
        """The client, once it is connected (waits up to CONNECT_WAIT_S), else None."""
        if not self.online.wait(CONNECT_WAIT_S):
            return None
        with self._lock:
            return self.handle if self.mode == "resume" and not self.fenced else None

    def _content(self, record: dict[str, str]) -> dict[str, Any]:
        """What the client sends: the text, or the media from Redis or from its URL."""
        content: dict[str, Any] = {"kind": record.get("kind", "text"), "ref": record["id"]}
        if content["kind"] == "text":
            content["text"] = record.get("text", "")
            return content
        if record.get("media_url"):
            data = self._fetch(record["media_url"])
        else:
            _, data = self._messages.media(self.tenant, record["id"])
        content.update({"media_base64": base64.b64encode(data).decode(),
                        "mime_type": record.get("mime_type") or _guess_mime(content["kind"]),
                        "filename": record.get("filename", ""),
                        "caption": record.get("caption", "")})
        return content

    def _fetch(self, url: str) -> bytes:
        limit = self._settings.message_max_media_bytes
        policy = OutboundPolicy(self._settings.webhook_allow_private)
        try:
            with policy.session() as http, http.get(
                    url, timeout=MEDIA_FETCH_TIMEOUT_S, stream=True) as response:
                if response.status_code != 200:
                    raise WhatsAppError(f"fetching the media answered HTTP "
                                        f"{response.status_code}")
                data = b""
                for chunk in response.iter_content(65536):
                    data += chunk
                    if len(data) > limit:
                        raise WhatsAppError(f"the media is over {limit} bytes")
                return data
        except WapairError:
            raise
        except Exception as e:  # requests, urllib3 and socket errors: the URL failed
            raise WhatsAppError(f"fetching the media failed: {type(e).__name__}") from e

    # --- what comes in ----------------------------------------------------------
    def _handle_message(self, event: WaEvent, now: float) -> None:
        data = event.data
        wa_id = str(data.get("wa_message_id") or "")
        if not wa_id:
            return
        message_id = inbound_id(wa_id)
        at = float(data.get("at") or now)
        kind = str(data.get("type") or "text")
        record = {"id": message_id, "direction": "in", "status": "received", "kind": kind,
                  "from": str(data.get("from", "")), "chat": str(data.get("chat", "")),
                  "text": str(data.get("text") or ""), "wa_message_id": wa_id,
                  "created_at": f"{at:.3f}"}
        media = b""
        if data.get("media_base64"):
            media = base64.b64decode(str(data["media_base64"]))
        omitted = "" if media else str(data.get("media_omitted") or "")
        payload: dict[str, Any] = {"id": message_id, "from": record["from"],
                                   "chat": record["chat"], "at": at, "wa_message_id": wa_id,
                                   "kind": kind}
        if record["text"]:
            payload["text"] = record["text"]
        if media or omitted:
            # Media that was not downloaded keeps its metadata and says why it has none.
            meta: dict[str, Any] = {
                "mime_type": str(data.get("mime_type") or "application/octet-stream"),
                "size": len(media) if media else int(data.get("size") or 0),
                "filename": str(data.get("filename") or "") or None}
            record.update({"mime_type": meta["mime_type"], "size": str(meta["size"]),
                           "filename": meta["filename"] or ""})
            payload["media"] = {**meta, "url": None if omitted else
                                f"/api/whatsapp/messages/{message_id}/media"}
            if omitted:
                record["media_omitted"] = payload["media"]["omitted"] = omitted
        result = self._messages.record_inbound(self.tenant, self.lease.fence, message_id,
                                               record, payload, media)
        if result == 0:
            self.fenced = True
            self._detach()
            return
        if result == 1:
            self._observe_received()
        self._ack(data)

    def _handle_receipt(self, event: WaEvent, now: float) -> None:
        self._apply_receipt(event)

    def _apply_receipt(self, event: WaEvent) -> None:
        data = event.data
        wa_id, status = str(data.get("wa_message_id") or ""), str(data.get("status") or "")
        if status not in (_M.DELIVERED, _M.READ):
            return
        message_id = self._sent_ids.get(wa_id) or self._messages.id_for(self.tenant, wa_id)
        if message_id is None:
            # Before our 'sent' is written (the receipt can beat the send's answer),
            # or not ours at all: applied after the send, else offered again later.
            if len(self._early_receipts) >= EARLY_RECEIPTS_MAX:
                self._early_receipts.pop(next(iter(self._early_receipts)))
            self._early_receipts[wa_id] = dict(data)
            return
        at = f"{float(data.get('at') or self._clock.time()):.3f}"
        record = {"id": message_id}
        if status == _M.DELIVERED:
            moved = self._move(record, _M.DELIVERED, (_M.SENT,), delivered_at=at)
        else:
            moved = self._move(record, _M.READ, (_M.SENT, _M.DELIVERED), read_at=at)
        if moved or not self.fenced:
            self._ack(data)

    def _remember_sent(self, wa_id: str, message_id: str) -> None:
        """Index a send of ours here too, as message_update.lua indexed it in Redis."""
        if len(self._sent_ids) >= SENT_IDS_MAX:
            self._sent_ids.pop(next(iter(self._sent_ids)))
        self._sent_ids[wa_id] = message_id

    def _ack(self, data: dict[str, Any]) -> None:
        handle = self.handle
        if handle is not None and data.get("ack"):
            handle.ack_inbound(str(data["ack"]))


def _guess_mime(kind: str) -> str:
    return "image/jpeg" if kind == "image" else "application/octet-stream"

