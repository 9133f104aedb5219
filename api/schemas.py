"""Request and response schemas (marshmallow); unknown request fields are rejected.

Every ``Schema`` subclass defined here becomes an OpenAPI component under its
class name (``api/openapi.py``), so a view's docstring can say
``schema: StatusResponse``. Response schemas document what the views send;
the views build their JSON themselves.

Over 300 lines on purpose: ``api/openapi.py`` makes every schema here an OpenAPI
component, so the shapes of every route are read, and kept consistent, in one place.
The file is ordered by concept (requests of pairing, events and webhooks, tenants;
the responses; messages), and the components are found by walking this one
module (``_schemas()``, and ``tests/api/test_openapi.py`` checks that every class
here is a component): split into a package, each part would have to be
re-exported and the walk taught where to look, for no gain in what a reader finds.
"""

from __future__ import annotations

from typing import Any

from flask import Request
from marshmallow import (
    INCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from shared.errors import InvalidInput, MalformedRequest
from shared.events import KINDS
from shared.phone import E164, normalize_e164
from shared.tenants import TENANT_ID, validate_domain
from shared.webhooks import MAX_URL, URL_PATTERN

# shared.tenants.DOMAIN, which is matched on the lower-cased name, in ECMA-262 syntax.
DOMAIN_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"


class EmptyRequest(Schema):
    """Body of the command endpoints: nothing, or an empty object."""

    class Meta:
        unknown = RAISE


class PairRequest(Schema):
    """Body of POST /api/whatsapp/pair (optional): QR pairing, or by phone code with a number."""

    class Meta:
        unknown = RAISE

    method = fields.String(load_default="qr", validate=validate.OneOf(["qr", "phone"]))
    phone = fields.String(
        load_default=None,
        metadata={"description": "E.164 number of the phone to link, with method phone",
                  "example": "+6281234567890"},
    )

    #: The OpenAPI component (``api/openapi.py`` uses it instead of the fields): one
    #: shape per method, so a body valid by the document is one the server accepts.
    openapi_component: dict[str, Any] = {
        "description": "Optional: an empty body pairs by QR code.",
        "oneOf": [
            {"title": "QR code", "type": "object", "additionalProperties": False,
             "example": {"method": "qr"},
             "properties": {"method": {"type": "string", "enum": ["qr"], "default": "qr"}}},
            {"title": "Phone code", "type": "object", "additionalProperties": False,
             "required": ["method", "phone"],
             "example": {"method": "phone", "phone": "+6281234567890"},
             "properties": {
                 "method": {"type": "string", "enum": ["phone"]},
                 "phone": {"type": "string", "pattern": f"^{E164.pattern}$",
                           "description": "E.164 number of the phone to link"}}},
        ],
    }

    @validates_schema(pass_original=True)
    def _phone(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        if data.get("method") == "phone":
            try:
                normalize_e164(data.get("phone"))
            except InvalidInput as e:
                raise ValidationError(e.message, field_name="phone") from e
        elif isinstance(original, dict) and "phone" in original:
            raise ValidationError("phone is only for method phone", field_name="phone")


class Event(Schema):
    """One tenant event, as history returns it and SSE data carries it."""

    id = fields.String(metadata={"example": "1764140000000-0"})
    kind = fields.String(validate=validate.OneOf(KINDS))
    at = fields.Float(metadata={"description": "unix seconds"})
    data = fields.Dict(metadata={"description": "kind-specific fields (docs/api.md)"})


class EventHistory(Schema):
    """Response of GET /api/whatsapp/history."""

    events = fields.List(fields.Nested(Event))


class PairCode(Schema):
    """Response of GET /api/whatsapp/pair-code."""

    code = fields.String(metadata={"example": "ABCD-EFGH"})
    expires_at = fields.Float(metadata={"description": "unix seconds"})


class WebhookRequest(Schema):
    """Body of PUT /api/whatsapp/webhook."""

    class Meta:
        unknown = RAISE

    # Checked by shared.webhooks.validate_url (the same pattern), then by the address policy.
    url = fields.String(required=True, metadata={
        "example": "https://backend.example.com/wa", "pattern": f"^{URL_PATTERN}$",
        "maxLength": MAX_URL,
        "description": "http(s) URL naming its host by a DNS name; it must resolve to public "
                       "addresses (422 destination_refused otherwise)"})
    events = fields.List(fields.String(validate=validate.OneOf(KINDS)), load_default=None,
                         validate=validate.Length(min=1),
                         metadata={"description": "event kinds to deliver; default "
                                   "state, pairing, pair_code, error"})


class WebhookDelivery(Schema):
    """Delivery state of a tenant's webhook."""

    last_event_id = fields.String(allow_none=True)
    last_attempt_at = fields.Float(allow_none=True)
    last_status = fields.String(allow_none=True,
                                metadata={"description": "delivered, retrying or failed"})
    last_http_status = fields.Integer(allow_none=True)
    attempts = fields.Integer(metadata={"description": "attempts for the last event"})
    last_error = fields.String(allow_none=True)
    delivered = fields.Integer()
    failed = fields.Integer(metadata={"description": "events given up on"})


class Webhook(Schema):
    """Response of GET /api/whatsapp/webhook (the secret is never shown again)."""

    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.Float()
    delivery = fields.Nested(WebhookDelivery)


class WebhookCreated(Schema):
    """Response of PUT /api/whatsapp/webhook: the only response that carries the secret."""

    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.Float()
    secret = fields.String(metadata={"description": "HMAC-SHA256 key; shown once"})


class TenantCreateRequest(Schema):
    """Body of POST /api/admin/tenants."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True, metadata={"pattern": f"^{TENANT_ID.pattern}$"})
    domain = fields.String(load_default=None, allow_none=True, metadata={
        "pattern": DOMAIN_PATTERN, "maxLength": 253, "example": "wa.example.com"})

    @validates("id")
    def _id(self, value: str, **_: Any) -> None:
        if not TENANT_ID.fullmatch(value):
            raise ValidationError(f"tenant id must match {TENANT_ID.pattern}")

    @validates("domain")
    def _domain(self, value: str | None, **_: Any) -> None:
        if value is not None:
            try:
                validate_domain(value)
            except InvalidInput as e:
                raise ValidationError(e.message) from e


# --- responses ---------------------------------------------------------------
SESSION_STATES = ["idle", "pairing", "connected", "reconnecting", "logged_out", "failed"]


class ErrorDetail(Schema):
    """What went wrong: a stable machine-readable code and a sentence for people."""

    code = fields.String(required=True, metadata={"example": "unauthorized"})
    message = fields.String(required=True)


class ErrorResponse(Schema):
    """Every 4xx and 5xx answer: ``{"error": {"code", "message"}}``."""

    error = fields.Nested(ErrorDetail, required=True)


class HealthResponse(Schema):
    """GET /health."""

    status = fields.String(required=True, validate=validate.OneOf(["ok", "degraded"]))
    redis = fields.String(required=True, validate=validate.OneOf(["ok"]))
    workers = fields.Integer(required=True, metadata={"description": "live workers"})


class TenantCreated(Schema):
    """A new tenant and its API key (shown this once, stored only as a hash)."""

    id = fields.String(required=True)
    domain = fields.String(required=True, allow_none=True)
    api_key = fields.String(required=True, metadata={"example": "wak_..."})


class TenantKey(Schema):
    """A tenant's new API key after a rotation (shown this once)."""

    id = fields.String(required=True)
    api_key = fields.String(required=True)


class TenantInfo(Schema):
    """What the admin API shows of a tenant: never its key nor the key's hash."""

    id = fields.String(required=True)
    domain = fields.String(required=True, allow_none=True)
    created_at = fields.Float(required=True, allow_none=True,
                              metadata={"description": "unix seconds"})
    key_updated_at = fields.Float(required=True, allow_none=True,
                                  metadata={"description": "unix seconds of the last rotation"})
    has_key = fields.Boolean(required=True,
                             metadata={"description": "false after a revoke, until a rotate"})


class TenantList(Schema):
    """Every tenant, sorted by id."""

    tenants = fields.List(fields.Nested(TenantInfo), required=True)


class PairAccepted(Schema):
    """A pairing was accepted; follow it at status_url and qr_url."""

    pairing_id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(["pairing"]))
    status_url = fields.String(required=True)
    qr_url = fields.String(required=True)
    pair_code_url = fields.String(metadata={"description": "with method phone: where the "
                                                           "phone code appears"})


class CommandAccepted(Schema):
    """A reset, logout or resume was queued for the tenant's owner."""

    command_id = fields.String(required=True)
    command = fields.String(required=True,
                            validate=validate.OneOf(["reset", "logout", "resume"]))
    status_url = fields.String(required=True)


class PairingInfo(Schema):
    """The tenant's current or last pairing."""

    id = fields.String(required=True)
    method = fields.String(required=True)
    status = fields.String(required=True)
    started_at = fields.Float(required=True, allow_none=True)
    deadline_at = fields.Float(required=True, allow_none=True)
    ended_at = fields.Float(required=True, allow_none=True)
    phone = fields.String(metadata={"description": "with method phone: the number, masked"})


class LastError(Schema):
    """The last error the tenant's session hit (unix seconds in ``at``)."""

    class Meta:
        unknown = INCLUDE

    code = fields.String(required=True)
    message = fields.String(required=True)
    at = fields.Float(required=True)


class StatusResponse(Schema):
    """GET /api/whatsapp/status."""

    tenant = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(SESSION_STATES))
    pairing = fields.Nested(PairingInfo, required=True, allow_none=True)
    device = fields.String(required=True, allow_none=True,
                           metadata={"description": "the linked device's JID"})
    owner = fields.String(required=True, allow_none=True,
                          metadata={"description": "the worker holding the session"})
    updated_at = fields.Float(required=True, allow_none=True)
    last_error = fields.Nested(LastError, required=True, allow_none=True)


class QrResponse(Schema):
    """The QR code to show now, as text (render it yourself, or ask for PNG or SVG)."""

    code = fields.String(required=True)
    expires_at = fields.Float(required=True, metadata={"description": "unix seconds"})
    index = fields.Integer(required=True,
                           metadata={"description": "0 for the first code of a pairing, "
                                                    "then 1, 2, ... as WhatsApp rotates it"})


def load_body(request: Request, schema: Schema) -> dict[str, Any]:
    """Parse and validate a JSON body; an empty body means ``{}``."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        if not request.is_json:
            raise MalformedRequest("send the body as application/json")
        try:
            data = request.get_json(force=True, silent=False)
        except Exception as e:  # werkzeug raises BadRequest with an HTML description
            raise MalformedRequest("the body is not valid JSON") from e
    if not isinstance(data, dict):
        raise MalformedRequest("the body must be a JSON object")
    try:
        return dict(schema.load(data))
    except ValidationError as e:
        raise InvalidInput(_describe(e.messages)) from e


def _describe(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(
            f"{field}: {' '.join(map(str, errs)) if isinstance(errs, list) else errs}"
            for field, errs in messages.items()
        )
    return str(messages)


# --- messages (issue 15) ------------------------------------------------------
#: Where a message goes: an E.164 number, a user JID or a group JID.
TO_PATTERN = r"^(\+[1-9][0-9]{6,14}|[0-9]{5,20}@s\.whatsapp\.net|[0-9]{5,20}(-[0-9]{1,20})?@g\.us)$"
MIME_PATTERN = r"^[a-z0-9][a-z0-9.+-]{0,62}/[a-zA-Z0-9][a-zA-Z0-9.+-]{0,126}$"
TEXT_MAX = 4096
# Standard base64 with its padding, so what matches also decodes.
BASE64_PATTERN = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_MEDIA_PROPERTIES: dict[str, Any] = {
    "data_base64": {"type": "string", "minLength": 4, "pattern": BASE64_PATTERN,
                    "description": "the bytes, standard base64"},
    "url": {"type": "string", "maxLength": MAX_URL, "pattern": URL_PATTERN,
            "description": "fetched by the worker under the webhook address rules"},
    "caption": {"type": "string", "minLength": 1, "maxLength": 1024},
    "mime_type": {"type": "string", "pattern": MIME_PATTERN},
    "filename": {"type": "string", "minLength": 1, "maxLength": 255},
}


class MediaRequest(Schema):
    """An image or document to send: its bytes in base64, or a URL the worker fetches."""

    class Meta:
        unknown = RAISE

    openapi_component: dict[str, Any] = {
        "description": "Exactly one of data_base64 and url.",
        "type": "object", "additionalProperties": False,
        "properties": _MEDIA_PROPERTIES,
        "oneOf": [{"required": ["data_base64"], "not": {"required": ["url"]}},
                  {"required": ["url"], "not": {"required": ["data_base64"]}}],
    }

    data_base64 = fields.String(validate=[validate.Length(min=4),
                                          validate.Regexp(BASE64_PATTERN)],
                                metadata={"description": "the bytes, standard base64"})
    url = fields.String(validate=[validate.Length(max=MAX_URL), validate.Regexp(URL_PATTERN)],
                        metadata={"description": "fetched by the worker under the webhook "
                                                 "address rules (public addresses only)"})
    caption = fields.String(validate=validate.Length(min=1, max=1024))
    mime_type = fields.String(validate=validate.Regexp(MIME_PATTERN))
    filename = fields.String(validate=validate.Length(min=1, max=255))

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        if ("data_base64" in data) == ("url" in data):
            raise ValidationError("give exactly one of data_base64 and url")


class SendMessageRequest(Schema):
    """Body of POST /api/whatsapp/messages: a recipient and one of text, image, document."""

    class Meta:
        unknown = RAISE

    openapi_component: dict[str, Any] = {
        "description": "A recipient and exactly one of text, image, document.",
        "type": "object", "additionalProperties": False, "required": ["to"],
        "example": {"to": "+6281234567890", "text": "hello"},
        "properties": {
            "to": {"type": "string", "pattern": TO_PATTERN,
                   "description": "E.164 number (+6281234567890) or a JID"},
            "text": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX,
                     "pattern": r"\S"},
            "image": {"$ref": "#/components/schemas/MediaRequest"},
            "document": {"$ref": "#/components/schemas/MediaRequest"},
            "retry": {"type": "string", "enum": ["at_most_once", "at_least_once"],
                      "default": "at_most_once",
                      "description": "at_least_once: a send cut short by its owner's death "
                                     "is sent again (the recipient may get it twice)"},
        },
        "oneOf": [{"required": [k], "not": {"anyOf": [{"required": [o]} for o in others]}}
                  for k, others in (("text", ("image", "document")),
                                    ("image", ("text", "document")),
                                    ("document", ("text", "image")))],
    }

    to = fields.String(required=True, validate=validate.Regexp(TO_PATTERN),
                       metadata={"description": "E.164 number (+6281234567890) or a JID",
                                 "example": "+6281234567890"})
    text = fields.String(validate=validate.Length(min=1, max=TEXT_MAX))
    image = fields.Nested(MediaRequest)
    document = fields.Nested(MediaRequest)
    retry = fields.String(load_default="at_most_once",
                          validate=validate.OneOf(["at_most_once", "at_least_once"]),
                          metadata={"description": "at_least_once: a send cut short by its "
                                                   "owner's death is sent again (the "
                                                   "recipient may get it twice)"})

    @validates_schema
    def _one_content(self, data: dict[str, Any], **_: Any) -> None:
        given = [k for k in ("text", "image", "document") if k in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of text, image, document")
        if "text" in data and not data["text"].strip():
            raise ValidationError("text must not be blank", "text")


class MessageAccepted(Schema):
    """A message was accepted into the tenant's outbox; follow it at status_url."""

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(
        ["queued", "sending", "sent", "delivered", "read", "failed", "unknown"]),
        metadata={"description": "queued, or the status now for a repeated Idempotency-Key"})
    status_url = fields.String(required=True)


class MessageMedia(Schema):
    """What an inbound message's media is; the bytes are at /messages/{id}/media."""

    mime_type = fields.String(required=True)
    size = fields.Integer(required=True)
    filename = fields.String(allow_none=True)


class MessageInfo(Schema):
    """One message, sent or received (a received one also has from, chat, text, media)."""

    id = fields.String(required=True)
    direction = fields.String(required=True, validate=validate.OneOf(["out", "in"]))
    kind = fields.String(required=True, validate=validate.OneOf(["text", "image", "document"]))
    to = fields.String(allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(
        ["queued", "sending", "sent", "delivered", "read", "failed", "unknown", "received"]))
    wa_message_id = fields.String(allow_none=True)
    created_at = fields.Float(allow_none=True)
    sent_at = fields.Float(allow_none=True)
    delivered_at = fields.Float(allow_none=True)
    read_at = fields.Float(allow_none=True)
    error = fields.Dict(allow_none=True)
    # inbound only
    from_ = fields.String(data_key="from", allow_none=True)
    chat = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    media = fields.Nested(MessageMedia)


class MessageList(Schema):
    """The tenant's recent messages of one direction, newest first."""

    messages = fields.List(fields.Nested(MessageInfo), required=True)
