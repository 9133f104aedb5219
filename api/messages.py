"""Messages through the tenant's owned session: send, look up, list, fetch media.

The API only records: a message is validated, stored in Redis and its send command
queued for the tenant's owner in one Lua step (``shared.messages``); the owner sends
it. Text and media never travel in a Celery task (the kick names the tenant only).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import authenticated_tenant
from api.metrics import log_context
from api.schemas import SendMessageRequest, load_body
from api.services import services
from shared.errors import InvalidInput, NotFound, WapairError
from shared.messages import MessageStore

messages = Blueprint("messages", __name__, url_prefix="/api/whatsapp")
IDEMPOTENCY_KEY_MAX = 100
#: An Idempotency-Key: printable ASCII, no space at either end (the document says the same).
IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]{0,98}[!-~])?")
LIST_MAX = 200


class PayloadTooLarge(WapairError):
    """Raised when a message (its body, or its decoded media) is over the size limit."""

    status = 413
    code = "payload_too_large"


def _store() -> MessageStore:
    return services().messages


def _status_url(message_id: str) -> str:
    return f"/api/whatsapp/messages/{message_id}"


def _record(body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """The message record's fields and its media bytes, from a validated body."""
    to = body["to"]
    chat = f"{to[1:]}@s.whatsapp.net" if to.startswith("+") else to
    record = {"to": to, "chat": chat, "retry": body["retry"]}
    if "text" in body:
        return {**record, "kind": "text", "text": body["text"]}, b""
    kind = "image" if "image" in body else "document"
    media = body[kind]
    record.update({"kind": kind, "caption": media.get("caption", ""),
                   "mime_type": media.get("mime_type", ""), "filename": media.get("filename", "")})
    limit = services().settings.message_max_media_bytes
    if "url" in media:
        services().outbound.check_url(media["url"])
        return {**record, "media_url": media["url"]}, b""
    if len(media["data_base64"]) * 3 // 4 > limit + 3:
        raise PayloadTooLarge(f"media is over {limit} bytes")
    try:
        data = base64.b64decode(media["data_base64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{kind}.data_base64 is not valid base64", field=kind) from e
    if len(data) > limit:
        raise PayloadTooLarge(f"media is over {limit} bytes")
    return {**record, "size": str(len(data))}, data


@messages.post("/messages")
def send() -> tuple[Response, int]:
    """Queue a message for the tenant's owner to send: 202 with its id.
    ---
    post:
      tags: [messages]
      description: >
        At most once by default: a message whose owner died while handing it to
        WhatsApp ends `unknown` and is not sent again, unless `retry` is
        `at_least_once`. The same `Idempotency-Key` with the same body answers
        the same message; with another body, 409.
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - in: header
          name: Idempotency-Key
          required: false
          schema:
            {type: string, minLength: 1, maxLength: 100, pattern: '^[!-~]([ -~]{0,98}[!-~])?$'}
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: '#/components/schemas/SendMessageRequest'}}}
      responses:
        202:
          description: Accepted; follow it at status_url
          content: {application/json: {schema: MessageAccepted}}
        409: Conflict
        413: PayloadTooLarge
        429: TooManyRequests
    """
    settings = services().settings
    request.max_content_length = settings.message_max_body_bytes
    tenant = authenticated_tenant()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII "
                           "characters, with no space at either end", field="Idempotency-Key")
    raw = request.get_json(silent=True) if request.is_json else None
    body = load_body(request, SendMessageRequest())
    if not body:
        raise InvalidInput("to: Missing data for required field.")
    record, media = _record(body)
    store = _store()
    accepted = store.accept(tenant, record, media=media, idempotency_key=key or "",
                            body=raw if isinstance(raw, dict) else body,
                            outbox_max=settings.outbox_max,
                            send_rate=settings.send_rate_per_tenant)
    log_context(tenant=tenant)
    if not accepted.created:
        status = store.get(tenant, accepted.id)["status"]
        return jsonify({"id": accepted.id, "status": status,
                        "status_url": _status_url(accepted.id)}), 202
    services().kick(tenant, accepted.owner,
                    if_lost="the owner's next mailbox check sends the message")
    return jsonify({"id": accepted.id, "status": "queued",
                    "status_url": _status_url(accepted.id)}), 202


def _message_id(message_id: str) -> str:
    if not (message_id.startswith(("m_", "in_")) and len(message_id) <= 120
            and message_id.replace("_", "").replace("-", "").isalnum()):
        raise NotFound("no such message")
    return message_id


@messages.get("/messages/<message_id>")
def show(message_id: str) -> Response:
    """One message and its status.
    ---
    get:
      tags: [messages]
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - {in: path, name: message_id, required: true, schema: {type: string}}
      responses:
        200:
          description: The message
          content: {application/json: {schema: MessageInfo}}
    """
    tenant = authenticated_tenant()
    return jsonify(_store().get(tenant, _message_id(message_id)))


@messages.get("/messages")
def recent() -> Response:
    """The tenant's recent messages, newest first.
    ---
    get:
      tags: [messages]
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - {in: query, name: direction, required: false,
           schema: {type: string, enum: [in, out], default: out}}
        - {in: query, name: limit, required: false,
           schema: {type: integer, minimum: 1, maximum: 200, default: 50}}
      responses:
        200:
          description: The messages
          content: {application/json: {schema: MessageList}}
    """
    tenant = authenticated_tenant()
    direction = request.args.get("direction", "out")
    if direction not in ("in", "out"):
        raise InvalidInput("direction must be in or out", field="direction")
    raw_limit = request.args.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_MAX:
        raise InvalidInput(f"limit must be an integer from 1 to {LIST_MAX}", field="limit")
    return jsonify({"messages": _store().recent(tenant, direction, int(raw_limit))})


@messages.get("/messages/<message_id>/media")
def media(message_id: str) -> Response:
    """The media bytes of a message (an inbound one's, or what was given to send).
    ---
    get:
      tags: [messages]
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - {in: path, name: message_id, required: true, schema: {type: string}}
      responses:
        200:
          description: The bytes, with the message's mime type
          content:
            application/octet-stream: {schema: {type: string, format: binary}}
    """
    tenant = authenticated_tenant()
    record, data = _store().media(tenant, _message_id(message_id))
    response = Response(data, mimetype=record.get("mime_type") or "application/octet-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # The type is the sender's word: never let a browser render it on our origin.
    response.headers["Content-Disposition"] = "attachment"
    return response
