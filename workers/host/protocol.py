"""The frames a worker and its connection hosts exchange: one JSON object per line.

They travel over a Unix socket pair that the worker creates and the host
inherits, so the host sees end-of-file the moment its worker dies, however it
dies. Secrets (a PostgreSQL store URL with a password, device keys) travel only
over that socket, never on a command line.

Worker to host, ``op``:
    config {backend, sandbox_url, store, proxy, device_name, log_level, log_format}
        the first frame; nothing else is read before it
    open {sid, tenant, jid, until}   open a client; ``until`` is the monotonic time
        (``CLOCK_MONOTONIC``, shared by every process of the machine) after which
        the host must not hold it: the worker's self-fence time for the lease
    until {sids: {sid: until}}       later self-fence times, after lease renewals
    close {sid}                      close a client; CLOSED confirms it
    logout {sid, req}                unlink the device, then close; answered by ``reply``
    pair_code {sid, phone}           ask for a phone pairing code
    delete_store {tenant, jid, req}  remove a tenant's stored keys; answered by ``reply``
    send {sid, req, chat, content}   send a message; answered by ``reply`` with
        ``wa_message_id`` (message text travels only over this socket)
    ack {sid, ack}                   an inbound message or receipt is recorded (``ack``: the
        token its event carried): the server may forget it

Host to worker, ``op``:
    ready {pid}
    event {sid, kind, data}          a port event (``shared.whatsapp.port.EventKind``)
    stats {fds, threads, rss_kb, sessions, opens}   every ``STATS_INTERVAL_S``: also
        the host's heartbeat
    reply {req, error, ...}          ``error`` is "" on success; ``send`` adds ``wa_message_id``
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

STATS_INTERVAL_S = 1.0
#: A host silent for this long (no stats) is taken for wedged or stopped and killed.
SILENT_HOST_S = 5.0
#: A frame not written in this long breaks the link: the other side is not reading.
SEND_TIMEOUT_S = 1.0
_CHUNK = 1 << 16
# Built once: json.dumps/json.loads build or look up their coder and sniff a bytes
# input's encoding on every call, a few frames per message on both sides.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


class FrameWriter:
    """Writes frames to a socket from any thread.

    The socket has a timeout (``SEND_TIMEOUT_S``): a frame only partly written
    leaves the stream unreadable, so the first failed send marks the link broken
    for good and ``on_broken`` runs once (the worker kills that host; a host exits).
    """

    def __init__(self, sock: socket.socket, on_broken: Callable[[], None] | None = None) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._on_broken = on_broken
        self.broken = False

    def send(self, frame: dict[str, Any]) -> bool:
        """Write one frame; False if the link is (now) broken."""
        data = _encode(frame).encode() + b"\n"
        with self._lock:
            if self.broken:
                return False
            try:
                self._sock.sendall(data)
            except OSError:
                self.broken = True
            else:
                return True
        if self._on_broken is not None:
            self._on_broken()
        return False


def read_frames(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """Yield the frames read from ``sock`` until end-of-file or a broken socket.

    Reads with ``recv`` rather than a file object: the socket has a send timeout,
    and a file object cannot go on reading after a timed-out read.
    """
    pending = b""
    while True:
        try:
            chunk = sock.recv(_CHUNK)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                frame = _decode(line.decode())
            except ValueError:  # UnicodeDecodeError too
                continue
            if isinstance(frame, dict):
                yield frame
