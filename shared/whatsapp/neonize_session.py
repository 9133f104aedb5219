"""One neonize client on its own thread, translated into the port's events.

Traps this module works around (see DESIGN.md section 1 and the adapter's tests):

- The Go side keeps its clients in unlocked global maps, so concurrent setup or
  stop calls can kill the process with "concurrent map writes": ``GATE`` lets
  one such call run at a time.
- ``NewClient`` registers a finalizer that calls ``Stop(uuid)`` on garbage
  collection, which would stop a later session of the same tenant: it is detached
  and the session stops its own client instead.
- ``get_me()`` on a stopped client segfaults, so the JID comes from what we know.
- A ``stop()`` issued before the Go side registered the client is lost, so every
  later callback of a closing session stops the client again.

Over 300 lines: every trap above is about the one client object and its thread,
and the event translation reads and sets that client's state. The process
boundary (``workers/host/``) contains what this module cannot.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from neonize._binder import ProxySettings
from neonize.events import (
    ClientOutdatedEv,
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    KeepAliveRestoredEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
)
from neonize.exc import NeonizeError
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.utils.enum import ClientName
from neonize.utils.jid import Jid2String, build_jid

from .neonize_support import (
    BAN_CODES,
    FAILURE_CODES,
    GATE,
    QR_FIRST_TTL,
    QR_NEXT_TTL,
    NeonizeAdapterError,
    QuietClient,
    ffi,
    parse_jid,
    redact,
)
from .port import FINAL_EVENTS, EventKind, EventSink, WaEvent

#: Login statuses after which whatsmeow goes on offering QR codes.
NOT_FINAL_STATUSES = ("err-scanned-without-multidevice",)
#: How long whatsmeow offers QR codes: 60 s, then five more of 20 s.
QR_PHASE_S = QR_FIRST_TTL + 5 * QR_NEXT_TTL
#: whatsmeow's receipt types (neonize.Receipt.Type) that move our messages on.
RECEIPT_STATUSES = {1: "delivered", 4: "read"}



def _unix_s(timestamp: int) -> float:
    """A neonize timestamp in unix seconds (it gives milliseconds in some builds)."""
    return timestamp / 1000 if timestamp > 10**11 else float(timestamp)


class SessionStoreOwner(Protocol):
    """What a session needs of its backend (``neonize_adapter.NeonizeBackend``); a
    Protocol, so this module does not import the adapter that imports it."""

    proxy: str | None
    setup_hold: float
    device_name: str
    media_max_bytes: int  # inbound media over this are not downloaded

    def has_device(self, tenant: str, jid: str) -> bool: ...

    def remember_jid(self, tenant: str, jid: str) -> None: ...

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None: ...

log = logging.getLogger(__name__)


class NeonizeSession:
    """One tenant's neonize client on thread ``wa-neonize-<tenant>``; methods are thread-safe."""

    def __init__(
        self,
        backend: SessionStoreOwner,
        tenant: str,
        jid: str | None,
        database: str,
        on_event: EventSink,
        may_connect: Callable[[], bool] | None = None,
    ) -> None:
        self.tenant = tenant
        self._may_connect = may_connect
        self.jid = jid  # the resumed device, or the new one once pairing succeeded
        self._backend = backend
        self._database = database
        self._on_event = on_event
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._client: QuietClient | None = None
        self._closing = False
        self._connecting = False
        self._closers: list[threading.Thread] = []
        self._ended = False
        self._delete_on_exit = False
        self._qr_index = 0
        self._first_qr_at: float | None = None
        self.uuid = uuid.uuid4().hex
        # Daemon: neonize's own inner thread is non-daemon already; ours must not add to it.
        self._thread = threading.Thread(target=self._run, name=f"wa-neonize-{tenant}", daemon=True)

    def start(self) -> None:
        """Start the session thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the client for good without blocking; idempotent, no-op once the thread ended."""
        with self._lock:
            self._closing = True
            client = self._client if self._connecting else None
            if client is None:
                return  # the session thread sees _closing before it dials
            # whatsmeow's Disconnect waits for a dial in progress (up to its 60 s
            # timeout), so the stop runs on its own short-lived thread.
            closer = threading.Thread(
                target=self._stop, args=(client,), name=f"{self._thread.name}-close", daemon=True
            )
            self._closers.append(closer)
        closer.start()

    def logout(self) -> None:
        """Unlink the device on the server, close, and delete the tenant's store."""
        with self._lock:
            client = self._client
        try:
            if client is None:
                raise NeonizeAdapterError(f"session of {self.tenant} has no live client")
            try:
                ffi(client.logout)
            except NeonizeError as e:
                raise NeonizeAdapterError(
                    f"logout of {self.tenant} failed: {redact(str(e))}"
                ) from e
        finally:
            self.close()
        self._backend.delete_store(self.tenant, jid=self.jid)

    def send_message(self, chat: str, content: dict[str, Any]) -> str:
        """Send through whatsmeow (``send_message`` and its builders); WhatsApp's id for it.

        neonize 0.5.2 cannot choose the id, so a resend would be a second message:
        the owner sends at most once (see ``workers.session.messaging``).
        """
        with self._lock:
            client = self._client if not self._closing else None
        if client is None:
            raise NeonizeAdapterError("not connected")
        user, _, server = chat.partition("@")
        to = build_jid(user, server or "s.whatsapp.net")
        kind = content.get("kind", "text")
        try:
            if kind == "text":
                message: Any = str(content.get("text", ""))
            else:
                data = base64.b64decode(str(content.get("media_base64", "")))
                caption = str(content.get("caption") or "") or None
                if kind == "image":
                    message = ffi(lambda: client.build_image_message(data, caption=caption))
                else:
                    message = ffi(lambda: client.build_document_message(
                        data, caption=caption, filename=content.get("filename") or None,
                        mimetype=content.get("mime_type") or None))
            response = ffi(client.send_message, to, message)
        except NeonizeError as e:
            raise NeonizeAdapterError(f"send for {self.tenant} failed: {redact(str(e))}") from e
        return str(response.ID)

    def ack_inbound(self, ack: str) -> None:
        """whatsmeow acknowledges what it received by itself; nothing to do."""

    def request_pair_code(self, phone: str) -> None:
        """Ask whatsmeow (``PairPhone``) for a code to link ``phone``; answered by an event.

        neonize's ``PairPhone`` blocks on a server round trip and may be called
        from inside a Go callback (the first QR), so it runs on its own thread.
        """
        with self._lock:
            client = self._client if not self._closing else None
        if client is None:
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_code",
                       message="no live client to ask for a pair code")
            return
        threading.Thread(target=self._pair_phone, args=(client, phone), daemon=True,
                         name=f"{self._thread.name}-paircode").start()

    def _pair_phone(self, client: QuietClient, phone: str) -> None:
        try:
            code = ffi(client.PairPhone, phone, True, ClientName.LINUX)
        except Exception as e:  # noqa: BLE001 - PairPhoneError or a Go-side failure
            # whatsmeow's errors may quote the number: keep only the error's kind.
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_code",
                       message=f"pair code refused ({type(e).__name__})")
            return
        self._emit(EventKind.PAIR_CODE, code=str(code))

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the session's thread (and any stop it started) has ended; True if so."""
        if threading.current_thread() is self._thread:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = [self._thread, *self._closers]
        for thread in threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if thread is not threading.current_thread():
                thread.join(left)
        return not any(
            thread.is_alive() for thread in threads if thread is not threading.current_thread()
        )

    def _run(self) -> None:
        """Body of the session thread: prepare, connect until stopped, then report CLOSED."""
        client = None
        try:
            client = self._prepare()
            if client is not None:
                self._connect(client)
        except Exception as e:  # noqa: BLE001 - reported as an event, never raised here
            message = redact(f"{type(e).__name__}: {e}")
            self._emit(EventKind.CONNECT_FAILURE, reason="error", message=message)
        finally:
            GATE.leave(self)
            if client is not None and self._connecting:
                self._stop(client)
            with self._lock:
                self._client = None  # a late close() must not stop a newer session's uuid
            if self._delete_on_exit:
                self._delete_store()
            self._emit(EventKind.CLOSED)

    def _prepare(self) -> QuietClient | None:
        """Build the client, or report why there is nothing to connect."""
        if self.jid is not None:
            try:
                present = self._backend.has_device(self.tenant, self.jid)
            except Exception as e:  # noqa: BLE001 - sqlite3 or psycopg, reported as an event
                message = redact(f"{type(e).__name__}: {e}")
                self._emit(EventKind.CONNECT_FAILURE, reason="store", message=message)
                return None
            if not present:
                self._emit(EventKind.LOGGED_OUT, reason="no_device", on_connect=True)
                return None
            client = QuietClient(self._database, jid=parse_jid(self.jid), props=self._props())
        else:
            client = QuietClient(self._database, new_device=True, props=self._props())
        # Go keys its clients by this uuid. Never the tenant id (nor neonize's default,
        # the phone number): a late stop of an old session would act on the new one.
        client.uuid = self.uuid.encode()
        client._stop_finalizer.detach()
        self._subscribe(client)
        with self._lock:
            if self._closing:
                return None
            self._client = client
        return client

    def _props(self) -> DeviceProps:
        """What the phone lists under Linked Devices: our name, not neonize's default."""
        return DeviceProps(os=self._backend.device_name, platformType=DeviceProps.DESKTOP)

    def _connect(self, client: QuietClient) -> None:
        """Run neonize's blocking connect; its failure becomes CONNECT_FAILURE."""
        proxy = self._backend.proxy
        settings = ProxySettings(proxy_address=proxy) if proxy else None
        GATE.enter(self, hold=self._backend.setup_hold)
        with self._lock:
            if self._closing:
                return
            if self._may_connect is not None and not self._may_connect():
                return  # the owner's lease may be gone: never dial
            self._connecting = True
        try:
            client.connect(settings)
        except NeonizeError as e:
            message = redact(str(e))
            reason = "dial" if "failed to dial" in message else "error"
            if "required field" in message:
                # neonize encodes only failure reasons 400-406, 409, 500, 501, 503 and
                # ban codes 101-104, 106: any other leaves a proto2 field unset.
                reason = "unencodable"
                message = f"WhatsApp sent a failure code neonize cannot encode ({message})"
            self._emit(EventKind.CONNECT_FAILURE, reason=reason, message=message)

    def _stop(self, client: QuietClient) -> None:
        """Disconnect and stop the Go client; errors are logged, the session ends anyway."""
        for call in (client.disconnect, client.stop):
            try:
                ffi(call)
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                log.warning("neonize %s failed for %s: %s", call.__name__, self.tenant, e)

    def _delete_store(self) -> None:
        """Delete the store after a logout the server announced; failures are logged."""
        try:
            self._backend.delete_store(self.tenant, jid=self.jid)
        except Exception as e:  # noqa: BLE001 - nothing upstream could act on it now
            log.warning("deleting the store of %s failed: %s", self.tenant, e)

    def _emit(self, kind: EventKind, **data: Any) -> None:
        """Hand one event to the sink; nothing follows CLOSED."""
        with self._emit_lock:
            if self._ended:
                return
            self._ended = kind is EventKind.CLOSED
            try:
                self._on_event(WaEvent(kind, data))
            except Exception:  # noqa: BLE001 - a broken sink must not unwind into Go
                log.exception("event sink failed on %s for %s", kind.value, self.tenant)
        if kind in FINAL_EVENTS:
            self.close()

    def _subscribe(self, client: QuietClient) -> None:
        """Route neonize's callbacks (foreign threads) into ``_emit``."""
        client.event.qr(self._guarded(self._on_qr))
        client.login_status_handler = self._guarded(self._on_login_status)
        handlers: dict[Any, Any] = {
            PairStatusEv: self._on_pair_status,
            ConnectedEv: lambda _: self._emit(EventKind.CONNECTED, jid=self.jid or ""),
            DisconnectedEv: lambda _: self._emit(EventKind.DISCONNECTED, reason="disconnected"),
            LoggedOutEv: self._on_logged_out,
            StreamReplacedEv: lambda _: self._emit(EventKind.STREAM_REPLACED),
            TemporaryBanEv: lambda ev: self._emit(
                EventKind.TEMPORARY_BAN,
                code=BAN_CODES.get(ev.Code, ev.Code),
                expire_s=float(ev.Expire),
            ),
            ClientOutdatedEv: lambda _: self._emit(EventKind.CLIENT_OUTDATED),
            ConnectFailureEv: lambda ev: self._emit(
                EventKind.CONNECT_FAILURE,
                reason=FAILURE_CODES.get(ev.Reason, ev.Reason),
                message=ev.Message,
            ),
            KeepAliveTimeoutEv: lambda ev: self._emit(
                EventKind.KEEPALIVE_TIMEOUT, error_count=ev.ErrorCount
            ),
            KeepAliveRestoredEv: lambda _: self._emit(EventKind.KEEPALIVE_RESTORED),
            MessageEv: self._on_message,
            ReceiptEv: self._on_receipt,
        }
        for event_type, handler in handlers.items():
            client.event(event_type)(self._guarded(handler))

    def _on_message(self, ev: Any) -> None:
        """An incoming message (``MessageEv``): its text or caption and what it holds.

        An image's or document's bytes are downloaded here (``download_any``), so that
        ``GET .../media`` serves them. whatsmeow acknowledges on receipt, so there is
        no ``ack`` token.
        """
        info = ev.Info
        if info.MessageSource.IsFromMe:
            return  # our own, sent from another device of the account
        body = ev.Message
        kind, text, mime = "text", body.conversation or body.extendedTextMessage.text, ""
        if body.HasField("imageMessage"):
            kind, text, mime = "image", body.imageMessage.caption, body.imageMessage.mimetype
        elif body.HasField("documentMessage"):
            kind, text = "document", body.documentMessage.caption
            mime = body.documentMessage.mimetype
        data: dict[str, Any] = {
            "wa_message_id": info.ID, "from": Jid2String(info.MessageSource.Sender),
            "chat": Jid2String(info.MessageSource.Chat), "at": _unix_s(info.Timestamp),
            "type": kind, "text": text}
        if mime:
            data["mime_type"] = mime
        if kind != "text":
            media = body.imageMessage if kind == "image" else body.documentMessage
            if kind == "document" and media.fileName:
                data["filename"] = media.fileName
            self._download(body, int(media.fileLength), data)
        self._emit(EventKind.MESSAGE, **data)

    def _download(self, body: Any, size: int, data: dict[str, Any]) -> None:
        """Put the media's bytes into ``data`` (``media_base64``), or say why the message
        comes without them (``media_omitted``: ``too_large`` over the size limit,
        ``download_failed``; logged). ``size`` is the sender's ``fileLength`` until the
        bytes are in."""
        limit = self._backend.media_max_bytes
        data["size"] = size
        client = self._client
        if client is None:
            data["media_omitted"] = "download_failed"
            return
        if size > limit:
            log.warning("inbound media of %s not downloaded: %d bytes, over %d",
                        self.tenant, size, limit)
            data["media_omitted"] = "too_large"
            return
        try:
            raw = ffi(lambda: client.download_any(body))
        except Exception as e:  # noqa: BLE001 - neonize's DownloadError and Go errors
            log.warning("inbound media of %s not downloaded: %s", self.tenant, redact(str(e)))
            data["media_omitted"] = "download_failed"
            return
        if raw and len(raw) <= limit:
            data["media_base64"] = base64.b64encode(raw).decode()
        else:
            data["media_omitted"] = "too_large" if raw else "download_failed"

    def _on_receipt(self, ev: Any) -> None:
        """Receipts (``ReceiptEv``) for messages we sent: delivered and read, one per id."""
        status = RECEIPT_STATUSES.get(ev.Type)
        if status is None:
            return
        for wa_id in ev.MessageIDs:
            self._emit(EventKind.RECEIPT, wa_message_id=wa_id, status=status,
                       at=_unix_s(ev.Timestamp))

    def _guarded(self, handler: Any) -> Any:
        """Wrap a handler for Go callbacks: never raise, and re-stop a closing session."""

        def callback(*args: Any) -> None:
            GATE.leave(self)  # a callback proves the Go side finished registering the client
            try:
                handler(args[-1])
            except Exception:  # noqa: BLE001 - an exception would unwind into Go
                log.exception("neonize callback failed for %s", self.tenant)
            if self._closing:
                self.close()  # a stop() issued before the client was registered got lost

        return callback

    def _qr_phase_cut_short(self) -> bool:
        """True if the QR codes whatsmeow offers (60 s, then 20 s each) cannot have run out."""
        if self._first_qr_at is None:
            return True
        return time.monotonic() - self._first_qr_at < QR_PHASE_S - QR_NEXT_TTL

    def _on_qr(self, code: bytes) -> None:
        """Report one QR code; whatsmeow shows the first for 60 s, the next ones for 20 s."""
        if self._first_qr_at is None:
            self._first_qr_at = time.monotonic()
        index, self._qr_index = self._qr_index, self._qr_index + 1
        expires_in = QR_FIRST_TTL if index == 0 else QR_NEXT_TTL
        self._emit(EventKind.QR, code=code.decode(), expires_in=expires_in, index=index)

    def _on_login_status(self, status: str) -> None:
        """Translate whatsmeow's QR-channel outcome; "success" and the statuses whatsmeow
        does not treat as final let the session go on."""
        if status in ("success", *NOT_FINAL_STATUSES):
            if status != "success":
                log.info("neonize %s: login status %s; the pairing goes on", self.tenant, status)
            return
        if status == "timeout" and self._qr_phase_cut_short():
            # whatsmeow reports a network drop in the QR phase as "timeout" too: before
            # its codes ran out, it cannot be the server ending the pairing.
            self._emit(EventKind.CONNECT_FAILURE, reason="network",
                       message="the connection dropped during the QR phase")
            self.close()
        elif status == "timeout":
            self._emit(EventKind.PAIRING_TIMEOUT)
        elif status.startswith("passkey"):
            # neonize gives no way to answer a passkey challenge.
            self._emit(EventKind.CONNECT_FAILURE, reason="passkey",
                       message=f"pairing: {status} (a passkey cannot be answered here)")
            self.close()
        elif status == "err-client-outdated":
            self._emit(EventKind.CLIENT_OUTDATED)
        else:
            self._emit(EventKind.CONNECT_FAILURE, reason=status, message=f"pairing: {status}")
            self.close()

    def _on_pair_status(self, ev: Any) -> None:
        """Report a finished pairing; CONNECTED follows after whatsmeow's own reconnect."""
        if ev.Status != PairStatusEv.SUCCESS:
            self._emit(EventKind.CONNECT_FAILURE, reason="pair_error", message=ev.Error)
            return
        self.jid = Jid2String(ev.ID)
        self._backend.remember_jid(self.tenant, self.jid)
        self._emit(
            EventKind.PAIR_SUCCESS,
            jid=self.jid,
            platform=ev.Platform,
            business_name=ev.BusinessName,
        )

    def _on_logged_out(self, ev: Any) -> None:
        """Report a final logout; whatsmeow already dropped the keys, we drop the file too."""
        self._delete_on_exit = True
        reason = FAILURE_CODES.get(ev.Reason, ev.Reason)
        extra = {}
        if not ev.OnConnect and reason == 401:
            # The stream error WhatsApp sends when two connections of one account
            # overlapped, or the phone unlinked the device.
            extra["detail"] = "device_removed"
        self._emit(EventKind.LOGGED_OUT, reason=reason, on_connect=ev.OnConnect, **extra)
