"""A stand-in for neonize's Go library, for connection hosts under test.

``python -m tests.support.fake_go --script NAME --fd N`` runs the real host
(``workers.host.child``) with the real neonize adapter and neonize's own Python
client, but with ``neonize.client.gocode`` (the ctypes handle on the Go
``.so``) replaced by :class:`FakeGo`. ``Neonize()`` then plays a script: it feeds
real serialized protobuf events through the very ctypes callbacks neonize
built (``Event.execute``, the QR and login-status callbacks), or misbehaves as
the real library does: hangs in close, leaks a descriptor per session, aborts
the process. No network is touched.

Scripts (``--script``):
    pair            2 QR codes, success, PairStatus, Connected; then waits for Stop
    events:K,...    after Connected, the events named K (see ``EVENTS``; ``message``
                    and ``image`` are MessageEvs, ``receipt`` a ReceiptEv); a SendMessage
                    is answered with the id ``SENT_ID``, a DownloadAny with ``MEDIA``
    qr_drop         2 QR codes, then login status "timeout" (a network drop)
    scanned_again   1 QR, "err-scanned-without-multidevice", 1 QR; then waits
    passkey         1 QR, then "passkey-required"
    unmapped        the marshal error neonize gives for a code it cannot encode
    hang            1 QR, then ignores Disconnect and Stop for good (whatsmeow's QR
                    channel that a local disconnect never closes)
    leak            like ``pair`` up to the first QR, and keeps one descriptor open
                    per session, forever (neonize's store container)
    abort           1 QR, then the process aborts (Go's ``fatal error``)
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any

from neonize.proto import Neonize_pb2 as P
from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as WAE2E

JID = P.JID(User="6281234567890", RawAgent=0, Device=28, Integrator=0,
            Server="s.whatsapp.net", IsEmpty=False)
EVENTS: dict[str, tuple[int, Any]] = {
    "disconnected": (12, P.Disconnected()),
    "device_removed": (6, P.LoggedOut(OnConnect=False, Reason=P.LOGGED_OUT)),
    "logged_out": (6, P.LoggedOut(OnConnect=True, Reason=P.MAIN_DEVICE_GONE)),
    "stream_replaced": (7, P.StreamReplaced()),
    "temporary_ban": (8, P.TemporaryBan(Code=P.TemporaryBan.BLOCKED_BY_USERS, Expire=3600)),
    "client_outdated": (10, P.ClientOutdated()),
    "connect_failure": (9, P.ConnectFailure(Reason=P.GENERIC, Message="bad",
                                            Raw=P.Node(Tag="failure"))),
    "keepalive_timeout": (4, P.KeepAliveTimeout(ErrorCount=2, LastSuccess=1700000000)),
    "keepalive_restored": (5, P.KeepAliveRestored()),
    "message": (17, P.Message(
        Info=P.MessageInfo(ID="3AINBOUND1", Timestamp=1700000000, MessageSource=P.MessageSource(
            Chat=P.JID(User="628111", Server="s.whatsapp.net", IsEmpty=False),
            Sender=P.JID(User="628111", Server="s.whatsapp.net", IsEmpty=False),
            IsFromMe=False)),
        Message=WAE2E.Message(conversation="hello from a contact"))),
    "image": (17, P.Message(
        Info=P.MessageInfo(ID="3AIMAGE1", Timestamp=1700000002, MessageSource=P.MessageSource(
            Chat=P.JID(User="628111", Server="s.whatsapp.net", IsEmpty=False),
            Sender=P.JID(User="628111", Server="s.whatsapp.net", IsEmpty=False),
            IsFromMe=False)),
        Message=WAE2E.Message(imageMessage=WAE2E.ImageMessage(
            mimetype="image/jpeg", caption="a photo", fileLength=9, directPath="/v/t62/x")))),
    "receipt": (18, P.Receipt(MessageIDs=["3EB0SENT1"], Timestamp=1700000001,
                              Type=P.Receipt.READ)),
}
SENT_ID = "3EB0SENT1"
#: What DownloadAny answers for any message (the ``image`` event's bytes).
MEDIA = b"\xff\xd8\xffJPEG!"
_leaked: list[int] = []


class FakeGo:
    """What neonize's client calls on ``gocode``, scripted."""

    def __init__(self, script: str) -> None:
        self.script = script
        self._stops: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def _stop_event(self, uuid: bytes) -> threading.Event:
        with self._lock:
            return self._stops.setdefault(bytes(uuid), threading.Event())

    def Neonize(self, name: bytes, uuid: bytes, jid: bytes, jid_size: int,  # noqa: N802
                new_device: int, log_level: int, qr_cb: Any, login_cb: Any, event_cb: Any,
                log_cb: Any, subscribers: Any, n_subscribers: int, props: bytes,
                n_props: int, *rest: Any) -> bytes:
        stop = self._stop_event(uuid)
        name_of = DeviceProps.FromString(bytes(props)[:n_props]).os

        def qr(code: str) -> None:
            qr_cb(ctypes.cast(ctypes.c_char_p(uuid), ctypes.c_void_p),
                  ctypes.cast(ctypes.c_char_p(code.encode()), ctypes.c_void_p))

        def status(text: str) -> None:
            login_cb(ctypes.cast(ctypes.c_char_p(uuid), ctypes.c_void_p),
                     ctypes.cast(ctypes.c_char_p(text.encode()), ctypes.c_void_p))

        def send(code: int, message: Any) -> None:
            raw = message.SerializePartialToString()
            buf = ctypes.create_string_buffer(raw, len(raw))
            event_cb(uuid, ctypes.cast(buf, ctypes.c_void_p), len(raw), code)

        script, _, arg = self.script.partition(":")
        # The device name the phone would list, as a QR code's text (tests read it back).
        qr(f"2@ref0,{name_of},identity,adv")
        if script == "hang":
            threading.Event().wait()  # no Stop ends it: whatsmeow's unclosed QR channel
        if script == "abort":
            os.abort()
        if script == "leak":
            _leaked.append(os.open(os.devnull, os.O_RDONLY))
            stop.wait()
            return b""
        if script == "passkey":
            status("passkey-required")
            stop.wait()
            return b""
        if script == "unmapped":
            return b"proto: required field neonize.ConnectFailure.Reason not set"
        qr("2@ref1,noise,identity,adv")
        if script == "qr_drop":
            status("timeout")
            threading.Event().wait()  # neonize then spins in FetchMe for good
        if script == "scanned_again":
            status("err-scanned-without-multidevice")
            qr("2@ref2,noise,identity,adv")
            stop.wait()
            return b""
        status("success")
        send(0, P.Device(JID=JID, Platform="", BussinessName="", PushName="", Initialized=True))
        send(2, P.PairStatus(ID=JID, BusinessName="", Platform="android",
                             Status=P.PairStatus.SUCCESS))
        send(3, P.Connected(status=True))
        for kind in filter(None, arg.split(",")):
            code, message = EVENTS[kind]
            send(code, message)
        stop.wait()
        return b""

    def Disconnect(self, uuid: bytes) -> None:  # noqa: N802
        if not self.script.startswith("hang"):
            self._stop_event(uuid).set()

    def Stop(self, uuid: bytes) -> None:  # noqa: N802
        self.Disconnect(uuid)

    def Logout(self, uuid: bytes) -> bytes:  # noqa: N802
        return b""

    def DownloadAny(self, uuid: bytes, message: bytes, size: int) -> bytes:  # noqa: N802
        """whatsmeow's download of a message's media: ``MEDIA`` for a message with media."""
        body = WAE2E.Message.FromString(ctypes.string_at(message, size)
                                        if isinstance(message, int) else message[:size])
        if not body.HasField("imageMessage"):
            return P.DownloadReturnFunction(Error="no media").SerializeToString()
        return P.DownloadReturnFunction(Binary=MEDIA).SerializeToString()

    def SendMessage(self, uuid: bytes, to: bytes, to_size: int, message: bytes,  # noqa: N802
                    size: int) -> bytes:
        """whatsmeow's answer to a send: the id it chose."""
        timings = P.MessageDebugTimings(Queue=0, Marshal=0, GetParticipants=0, GetDevices=0,
                                        GroupEncrypt=0, PeerEncrypt=0, Send=0, Resp=0, Retry=0)
        sent = P.SendMessageReturnFunction(SendResponse=P.SendResponse(
            ID=SENT_ID, Timestamp=1700000000, ServerID=1, DebugTimings=timings))
        return sent.SerializeToString()


def main() -> int:
    args = sys.argv[1:]
    script = args[args.index("--script") + 1]
    at = args.index("--script")
    rest = args[:at] + args[at + 2:]
    import neonize.client

    neonize.client.gocode = FakeGo(script)  # type: ignore[attr-defined]
    from workers.host.child import main as host_main

    return host_main(rest)


if __name__ == "__main__":
    sys.exit(main())
