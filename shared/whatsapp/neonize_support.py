"""Helpers the neonize adapter shares: the call gate, JID parsing, redaction, quiet logs."""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import time
from typing import Any

from neonize.client import NewClient
from neonize.proto.Neonize_pb2 import JID

from shared.errors import InvalidInput, WhatsAppError

_URL_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]*@")
# neonize's enum -> whatsmeow's numeric codes, so the worker sees e.g. 401 as DESIGN.md does.
FAILURE_CODES = {1: 400, 2: 401, 3: 402, 4: 403, 5: 406, 6: 405, 7: 409, 8: 500, 9: 501, 10: 503}
BAN_CODES = {1: 101, 2: 102, 3: 103, 4: 104, 5: 106}
QR_FIRST_TTL, QR_NEXT_TTL = 60.0, 20.0
_NOISY_LOGGERS = {
    "neonize": logging.ERROR,  # the ffmpeg warning on every connect
    "neonize.utils.log": logging.WARNING,  # its level is also the Go log level
    "whatsmeow": logging.WARNING,
    "Whatsmeow": logging.WARNING,
}


class NeonizeAdapterError(WhatsAppError):
    """Raised when a neonize call fails where the adapter cannot turn it into an event."""


class _Gate:
    """Lets one neonize call at a time touch the Go library's unlocked global maps."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: object | None = None
        self._expires = 0.0

    def enter(self, owner: object, hold: float) -> None:
        """Wait until no one holds the gate (or the holder overstayed ``hold``), then hold it."""
        with self._cond:
            while self._holder is not None and (left := self._expires - time.monotonic()) > 0:
                self._cond.wait(left)
            self._holder, self._expires = owner, time.monotonic() + hold

    def leave(self, owner: object) -> None:
        """Release the gate if ``owner`` still holds it."""
        with self._cond:
            if self._holder is owner:
                self._holder = None
                self._cond.notify_all()


GATE = _Gate()


def ffi(call: Any, *args: Any) -> Any:
    """Run one short neonize call while holding the gate."""
    token = object()
    GATE.enter(token, hold=5.0)
    try:
        return call(*args)
    finally:
        GATE.leave(token)


def parse_jid(jid: str) -> JID:
    """Turn ``user[.agent][:device]@server`` into neonize's JID message."""
    user, _, server = jid.rpartition("@")
    if not user or not server:
        raise InvalidInput(f"not a JID: {jid!r}", field="jid")
    user, _, device = user.partition(":")
    user, _, agent = user.partition(".")
    return JID(
        User=user,
        Server=server,
        Device=int(device or 0),
        RawAgent=int(agent or 0),
        Integrator=0,
        IsEmpty=False,
    )


def redact(message: str) -> str:
    """Drop credentials embedded in URLs (proxy or database) from an error message."""
    return _URL_USERINFO_RE.sub(r"\1***@", message)


def quiet_neonize_loggers() -> None:
    """Raise the level of neonize's and whatsmeow's own loggers; nothing else is touched."""
    for name, level in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


class QuietClient(NewClient):
    """A NewClient whose login-status callback reports instead of ``print``-ing."""

    login_status_handler: Any = None

    def _NewClient__onLoginStatus(self, uuid: int, status: int) -> None:  # noqa: N802
        """Forward whatsmeow's QR-channel status ("timeout", "success", ...) to the session."""
        if self.login_status_handler is not None:
            self.login_status_handler(ctypes.string_at(status).decode(errors="replace"))
