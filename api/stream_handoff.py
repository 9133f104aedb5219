"""Hand an authenticated event stream's connection from gunicorn to the stream hub.

The events view authenticates and validates exactly like every other view,
then leaves a :class:`StreamTicket` in the WSGI environ instead of streaming.
This middleware sees the ticket once Flask has built the response (status and
headers final, after every ``after_request``), and when gunicorn serves the
request on a plain TCP socket over HTTP/1.x it

1. duplicates the socket's descriptor for the hub (``api/stream_hub.py``),
   which writes the response head and the stream from then on;
2. puts the dead end of a fresh socket pair on gunicorn's descriptor number
   (``dup2``), so what gunicorn writes and closes next goes nowhere (it sees
   EPIPE, logged at debug level only) and it frees its thread at once.

Anywhere else (Flask's test client, gunicorn's own TLS, HTTP/2) the view's
ordinary streaming response is served, on a thread, as before.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from api.stream_hub import StreamHub

TICKET = "wapair.stream_ticket"
EVENTS_PATH = "/api/whatsapp/events"


@dataclass
class StreamTicket:
    """What the view decided: whose events, after which id, and the permit to give back."""

    tenant: str
    cursor: str
    release: Callable[[], None]
    taken: bool = False


def can_hand_off(environ: dict[str, Any]) -> bool:
    """True when the request came through gunicorn on a plain socket over HTTP/1.x."""
    sock = environ.get("gunicorn.socket")
    return (isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
            and sock.type == socket.SOCK_STREAM
            and str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1."))


def response_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """The HTTP/1.1 response head; the body ends when the connection closes."""
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name}: {value}" for name, value in headers
              if name.lower() not in ("connection", "content-length", "transfer-encoding")]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class StreamHandoff:
    """WSGI middleware around the Flask app (only the events path is looked at)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], hub: StreamHub) -> None:
        self.app = app
        self.hub = hub

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != EVENTS_PATH:
            return self.app(environ, start_response)
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.append((status, headers))
            return start_response(status, headers, exc_info)

        result = self.app(environ, capture)
        ticket: StreamTicket | None = environ.get(TICKET)
        if ticket is None or not started or not started[-1][0].startswith("200"):
            return result
        status, headers = started[-1]
        ticket.taken = True  # the body below must not give the permit back: the hub will
        close = getattr(result, "close", None)
        if close is not None:
            close()
        sock: socket.socket = environ["gunicorn.socket"]
        ours = socket.socket(fileno=os.dup(sock.fileno()))
        dead, peer = socket.socketpair()
        os.dup2(dead.fileno(), sock.fileno())
        dead.close()
        peer.close()
        try:
            self.hub.adopt(ours, response_head(status, headers), ticket.tenant, ticket.cursor,
                           ticket.release)
        except BaseException:
            ours.close()
            ticket.release()
            raise
        return []
