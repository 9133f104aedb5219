"""Live events for a tenant: Server-Sent Events, history, and the phone pairing code.

``GET /api/whatsapp/events`` streams the tenant's Redis stream (``wa:{t}:events``)
as SSE: ``id:`` is the stream id, ``event:`` the kind, ``data:`` the event as
JSON. A client resumes with ``Last-Event-ID``. A ``: heartbeat`` comment comes
after ``EVENTS_HEARTBEAT_S`` without an event, and the response ends after
``EVENTS_STREAM_MAX_S``; EventSource-style clients reconnect on their own.

The view authenticates and picks the cursor; under gunicorn the connection is
then handed to the process's stream hub (``api/stream_handoff.py``,
``api/stream_hub.py``): one asyncio loop holds every stream, so a stream costs
a few KB and no thread. At most ``EVENTS_MAX_STREAMS`` are open per process
(503 with Retry-After beyond that). Where no hand-off is possible (the test
client, gunicorn's own TLS, HTTP/2) a stream holds a thread, as it used to, and
at most ``api.services.THREAD_STREAMS`` of those are open, so they never take every thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Flask, Response, jsonify, request

from api.auth import authenticated_tenant
from api.errors import error_response
from api.services import services, services_of
from api.stream_handoff import TICKET, StreamHandoff, StreamTicket, can_hand_off
from api.stream_hub import RETRY_MS, format_sse
from shared.errors import InvalidInput, WapairError
from shared.events import EventLog, validate_event_id

live = Blueprint("live", __name__, url_prefix="/api/whatsapp")
HISTORY_MAX = 1000


def init_live(app: Flask) -> None:
    """Register the live blueprints and put the stream hand-off in front of ``app``."""
    from api.page import page
    from api.webhooks import webhooks

    app.wsgi_app = StreamHandoff(app.wsgi_app, services_of(app).hub)  # type: ignore[method-assign]
    app.register_blueprint(live)
    app.register_blueprint(webhooks)
    app.register_blueprint(page)


class _Held:
    """A stream's body that gives its permit back when the server closes it, even unread."""

    def __init__(self, chunks: Iterator[str], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def sse_stream(log: EventLog, tenant: str, cursor: str, heartbeat_s: float,
               max_s: float) -> Iterator[str]:
    """Events after ``cursor`` until ``max_s`` has passed; heartbeats while idle."""
    deadline = time.monotonic() + max_s
    yield f"retry: {RETRY_MS}\n: stream open\n\n"
    while (left := deadline - time.monotonic()) > 0:
        try:
            events = log.after(tenant, cursor, block_ms=max(1, int(min(heartbeat_s, left) * 1000)))
        except WapairError:
            yield ": store unavailable; reconnect\n\n"
            return
        if not events:
            yield ": heartbeat\n\n"
        for event in events:
            cursor = event.id
            yield format_sse(event)
    yield ": max duration reached; reconnect with Last-Event-ID\n\n"


@live.get("/events")
def events() -> tuple[Response, int]:
    """The tenant's events as Server-Sent Events, resumable with Last-Event-ID.
    ---
    get:
      tags: [events]
      security: [{TenantKey: []}]
      description: >
        text/event-stream of the tenant's events (kinds pairing, state, qr,
        pair_code, error). Each message has `id:` (the stream id), `event:`
        (the kind) and `data:` (the event as JSON, see the Event schema). Send
        Last-Event-ID to resume after an event; without it the stream starts
        with the next new event. The response ends after EVENTS_STREAM_MAX_S;
        reconnect with the last id. `: heartbeat` comments come while idle.
      parameters:
        - TenantId
        - in: header
          name: Last-Event-ID
          required: false
          description: resume after this event id
          schema: {type: string, pattern: '^[0-9]{1,20}-[0-9]{1,20}$'}
      responses:
        200:
          description: The event stream
          content: {text/event-stream: {schema: {type: string}}}
    """
    tenant = authenticated_tenant()
    found = services()
    log = found.events
    raw = request.headers.get("Last-Event-ID", "").strip()
    cursor = validate_event_id(raw) if raw else log.latest_id(tenant)
    settings = found.settings
    handoff = request.method == "GET" and can_hand_off(request.environ)
    permits = found.stream_permits if handoff else found.thread_stream_permits
    if not permits.acquire(blocking=False):
        response, status = error_response(
            503, "too_many_streams",
            "this API process serves as many event streams as it may; "
            "retry later or read GET /api/whatsapp/history")
        response.headers["Retry-After"] = str(RETRY_MS // 1000 * 5)
        return response, status
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if handoff:
        # api/stream_handoff.py takes the connection once Flask is done with it.
        ticket = StreamTicket(tenant, cursor, permits.release)
        request.environ[TICKET] = ticket
        return Response(_Held(iter(()), lambda: None if ticket.taken else ticket.release()),
                        mimetype="text/event-stream", headers=headers), 200
    stream = sse_stream(log, tenant, cursor, settings.events_heartbeat_s,
                        settings.events_stream_max_s)
    return Response(_Held(stream, permits.release), mimetype="text/event-stream",
                    headers=headers), 200


@live.get("/history")
def history() -> Response:
    """The tenant's last events, oldest first.
    ---
    get:
      tags: [events]
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - in: query
          name: limit
          required: false
          schema: {type: integer, minimum: 1, maximum: 1000, default: 50}
      responses:
        200:
          description: The last `limit` events, oldest first
          content: {application/json: {schema: EventHistory}}
    """
    tenant = authenticated_tenant()
    raw = request.args.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= HISTORY_MAX:
        raise InvalidInput(f"limit must be an integer from 1 to {HISTORY_MAX}", field="limit")
    found = services().events.history(tenant, int(raw))
    return jsonify({"events": [e.to_dict() for e in found]})


@live.get("/pair-code")
def pair_code() -> Response:
    """The 8-character code of a phone pairing, to enter on the phone.
    ---
    get:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      responses:
        200:
          description: The code, once the client could ask for it (after its first QR)
          content: {application/json: {schema: PairCode}}
    """
    return jsonify(services().store.current_pair_code(authenticated_tenant()))
