"""Request and response schemas (marshmallow); unknown request fields are rejected.

Every ``Schema`` subclass defined here becomes an OpenAPI component under its
class name (``api/openapi.py``), so a view's docstring can say
``schema: StatusResponse``. Response schemas document what the views send;
the views build their JSON themselves.
"""

from __future__ import annotations

from typing import Any

from flask import Request
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates

from shared.errors import InvalidInput, MalformedRequest
from shared.tenants import TENANT_ID, validate_domain


class EmptyRequest(Schema):
    """Body of the command endpoints: nothing, or an empty object."""

    class Meta:
        unknown = RAISE


class PairRequest(Schema):
    """Body of POST /api/whatsapp/pair (optional)."""

    class Meta:
        unknown = RAISE

    method = fields.String(load_default="qr", validate=validate.OneOf(["qr"]))


class TenantCreateRequest(Schema):
    """Body of POST /api/admin/tenants."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=validate.Regexp(TENANT_ID.pattern + r"\Z"))
    domain = fields.String(load_default=None, allow_none=True)

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
