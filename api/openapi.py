"""The OpenAPI 3.1 document at /openapi.json and Swagger UI at /docs (local files only).

How every view documents itself (the convention; docs/api.md repeats it):

1. The view's docstring is a one-line summary, then a line ``---``, then the
   YAML of its OpenAPI operations keyed by HTTP method, as apispec reads it::

       @whatsapp.get("/status")
       def status() -> Response:
           \"\"\"The tenant's state, pairing, device, owner and last error.
           ---
           get:
             tags: [whatsapp]
             security: [{TenantKey: []}]
             parameters: [TenantId]
             responses:
               200:
                 content: {application/json: {schema: StatusResponse}}
           \"\"\"

   The summary line becomes the operation's ``summary`` unless the YAML sets one.
2. Every marshmallow ``Schema`` in ``api/schemas.py`` is a component under its
   class name, so ``schema: StatusResponse`` works in any docstring.
3. Responses, parameters and security schemes shared by many views are
   components too (below): name them (``401: Unauthorized``,
   ``parameters: [TenantId]``, ``security: [{TenantKey: []}]``).
   An operation with ``security: [{TenantKey: []}]`` gets the answers every
   tenant request can give (``TENANT_ERRORS``: no or a bad tenant name, wrong
   credentials, unknown tenant, Redis down) without listing them; it lists only
   its own (409, 413, 429...).
4. The spec is built by walking every registered view of the app, so a new
   blueprint appears by itself; ``tests/api/test_openapi.py`` fails for any
   route whose methods are not documented.
"""

from __future__ import annotations

import mimetypes
import os
from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify
from marshmallow import Schema

from api import schemas
from api.services import services
from shared.errors import NotFound
from shared.tenants import TENANT_ID

openapi = Blueprint("openapi", __name__)
SWAGGER_UI_VERSION_FILE = "VERSION"
_UNDOCUMENTED_ENDPOINTS = {"static"}

_ERRORS = {
    "BadRequest": "Malformed JSON, a body that is not an object, or a missing tenant name",
    "Unauthorized": "Missing or wrong credentials",
    "Forbidden": "The key belongs to another tenant, or the admin API is disabled",
    "NotFound": "Unknown tenant, or nothing to show",
    "NotAcceptable": "None of the media types in Accept can be served",
    "Conflict": "The tenant's state does not allow this (connected, exists)",
    "PayloadTooLarge": "The body is larger than MAX_BODY_BYTES",
    "UnprocessableEntity": "Unknown fields or invalid values",
}
#: What authenticating a tenant request can answer (api/auth.py), by status.
TENANT_ERRORS = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden",
                 "404": "NotFound", "422": "UnprocessableEntity", "503": "ServiceUnavailable"}
_RETRY_AFTER = {"description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0}}
_RATE_LIMIT_HEADERS = {
    "Retry-After": _RETRY_AFTER,
    "RateLimit-Limit": {"description": "Requests allowed in the window",
                        "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the window",
                            "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the window resets",
                        "schema": {"type": "integer"}},
}


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": "ErrorResponse"}},
    }
    if headers:
        response["headers"] = headers
    return response


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented view registered on ``app``."""
    spec = APISpec(
        title="wapair",
        version="1",
        openapi_version="3.1.0",
        plugins=[FlaskPlugin(), MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={"description": "Links WhatsApp accounts (QR or phone code) and keeps exactly one "
                             "live connection per tenant. See docs/api.md."},
    )
    for name, schema in _schemas():
        if name not in spec.components.schemas:
            # A schema whose rules its fields cannot say (oneOf by method) states them itself.
            component = getattr(schema, "openapi_component", None)
            if component is not None:
                spec.components.schema(name, component=component)
            else:
                spec.components.schema(name, schema=schema)
    _add_shared_components(spec)
    summaries: dict[tuple[str, str], str] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in _UNDOCUMENTED_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        path = FlaskPlugin.flaskpath2openapi(rule.rule)
        summary = (view.__doc__ or "").strip().splitlines()[0:1]
        for method in rule.methods or ():
            summaries[(path, method.lower())] = summary[0] if summary else ""
        spec.path(view=view, app=app)
    document = spec.to_dict()
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            if summaries.get((path, method)):
                operation.setdefault("summary", summaries[(path, method)])
            if any("TenantKey" in scheme for scheme in operation.get("security", [])):
                _add_tenant_errors(operation)
    return document


def _add_tenant_errors(operation: dict[str, Any]) -> None:
    responses = {str(status): answer for status, answer in operation.get("responses", {}).items()}
    for status, name in TENANT_ERRORS.items():
        responses.setdefault(status, {"$ref": f"#/components/responses/{name}"})
    operation["responses"] = dict(sorted(responses.items()))


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__


def _schemas() -> list[tuple[str, type[Schema]]]:
    return sorted(
        (name, value)
        for name, value in vars(schemas).items()
        if isinstance(value, type) and issubclass(value, Schema) and value is not Schema
        and value.__module__ == schemas.__name__
    )


def _add_shared_components(spec: APISpec) -> None:
    spec.components.security_scheme("TenantKey", {
        "type": "http", "scheme": "bearer",
        "description": "The tenant's API key (wak_...), or the admin token acting for it. "
                       "Name the tenant with X-Tenant-ID or a Host mapped to its domain; "
                       "the Host alone never authenticates.",
    })
    spec.components.security_scheme("AdminToken", {
        "type": "http", "scheme": "bearer",
        "description": "ADMIN_TOKEN from the server's environment",
    })
    spec.components.security_scheme("MetricsToken", {
        "type": "http", "scheme": "bearer",
        "description": "METRICS_TOKEN (or the admin token) for GET /metrics",
    })
    spec.components.parameter("TenantId", "header", {
        "name": "X-Tenant-ID",
        "required": False,
        "description": "The tenant this request acts for (else a Host mapped to it)",
        "schema": {"type": "string", "pattern": f"^{TENANT_ID.pattern}$"},
    })
    spec.components.parameter("TenantPath", "path", {
        "name": "tenant",
        "required": True,
        "description": "A tenant id",
        "schema": {"type": "string", "pattern": f"^{TENANT_ID.pattern}$"},
    })
    for name, description in _ERRORS.items():
        spec.components.response(name, _error_response(description))
    spec.components.response("TooManyRequests", _error_response(
        "A rate limit was hit (code rate_limited), or for POST /pair a pairing is "
        "already running (code pairing_in_progress); wait Retry-After seconds",
        _RATE_LIMIT_HEADERS,
    ))
    spec.components.response("ServiceUnavailable", _error_response(
        "Redis or the broker is unreachable; try again after Retry-After seconds",
        {"Retry-After": _RETRY_AFTER},
    ))


@openapi.get("/openapi.json")
def document() -> Response:
    """This API's OpenAPI 3.1 document.
    ---
    get:
      tags: [docs]
      responses:
        200:
          description: The OpenAPI document
          content: {application/json: {schema: {type: object}}}
    """
    found = services()
    if found.openapi is None:
        found.openapi = build_spec(current_app)
    return jsonify(found.openapi)


@cache
def _swagger_ui_assets() -> dict[str, str]:
    """File name -> path of every Swagger UI asset the flask-swagger-ui wheel ships."""
    import flask_swagger_ui

    folder = os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")
    return {name: os.path.join(folder, name) for name in os.listdir(folder)
            if os.path.isfile(os.path.join(folder, name))}


@cache
def _asset_bytes(name: str) -> bytes:
    with open(_swagger_ui_assets()[name], "rb") as f:
        return f.read()


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>wapair API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-init.js"></script>
</body>
</html>
"""
_DOCS_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
};
"""
# Everything is served from here: no CDN, and the page may load nothing else.
_DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             "script-src 'self'; connect-src 'self'")


@openapi.get("/docs")
def docs() -> Response:
    """Swagger UI for this API, served from local files.
    ---
    get:
      tags: [docs]
      responses:
        200:
          description: The Swagger UI page
          content: {text/html: {schema: {type: string}}}
    """
    response = Response(_DOCS_PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _DOCS_CSP
    return response


@openapi.get("/docs/<path:asset>")
def docs_asset(asset: str) -> Response:
    """A Swagger UI asset (JavaScript, CSS, images).
    ---
    get:
      tags: [docs]
      parameters:
        - in: path
          name: asset
          required: true
          schema: {type: string, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$'}
      responses:
        200:
          description: The file
          content: {"*/*": {schema: {type: string, format: binary}}}
        404: NotFound
    """
    if asset == "swagger-ui-init.js":
        return Response(_DOCS_INIT, mimetype="text/javascript")
    # Only the files the wheel ships, by exact name: no path reaches anything else.
    if asset not in _swagger_ui_assets():
        raise NotFound(f"no such asset: {asset[:80]}")
    mimetype = mimetypes.guess_type(asset)[0] or "application/octet-stream"
    response = Response(_asset_bytes(asset), mimetype=mimetype)
    response.cache_control.max_age = 3600
    return response
