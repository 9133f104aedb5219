"""Request and response schemas (marshmallow); unknown fields are rejected."""

from __future__ import annotations

from typing import Any

from flask import Request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

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
