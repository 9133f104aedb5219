"""Admin endpoints (``Authorization: Bearer $ADMIN_TOKEN``): tenants and their keys.

A key is shown once, in the answer that creates or rotates it; only its
SHA-256 is stored. Revoking leaves the tenant without a key until a rotate.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import require_admin
from api.schemas import TenantCreateRequest, load_body
from api.services import services
from shared.tenants import validate_tenant_id

admin = Blueprint("admin", __name__, url_prefix="/api/admin")


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@admin.post("/tenants")
def create_tenant() -> tuple[Response, int]:
    """Create a tenant; its API key is in this response and nowhere else.
    ---
    post:
      tags: [admin]
      security: [{AdminToken: []}]
      requestBody:
        required: true
        content: {application/json: {schema: TenantCreateRequest}}
      responses:
        201:
          description: The tenant and its API key (shown once)
          content: {application/json: {schema: TenantCreated}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        409: Conflict
        413: PayloadTooLarge
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    require_admin()
    body = load_body(request, TenantCreateRequest())
    api_key = services().tenants.create(body["id"], body.get("domain"))
    created = jsonify({"id": body["id"], "domain": body.get("domain"), "api_key": api_key})
    return _no_store(created), 201


@admin.get("/tenants")
def list_tenants() -> Response:
    """Every tenant, with its domain and whether it has a key.
    ---
    get:
      tags: [admin]
      security: [{AdminToken: []}]
      responses:
        200:
          description: Every tenant, sorted by id
          content: {application/json: {schema: TenantList}}
        401: Unauthorized
        403: Forbidden
        503: ServiceUnavailable
    """
    require_admin()
    return jsonify({"tenants": services().tenants.describe_all()})


@admin.get("/tenants/<tenant>")
def show_tenant(tenant: str) -> Response:
    """One tenant, with its domain and whether it has a key.
    ---
    get:
      tags: [admin]
      security: [{AdminToken: []}]
      parameters: [TenantPath]
      responses:
        200:
          description: The tenant
          content: {application/json: {schema: TenantInfo}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    require_admin()
    return jsonify(services().tenants.describe(validate_tenant_id(tenant)))


@admin.post("/tenants/<tenant>/key")
def rotate_key(tenant: str) -> Response:
    """Give the tenant a new API key (shown once); the old key stops working at once.
    ---
    post:
      tags: [admin]
      security: [{AdminToken: []}]
      parameters: [TenantPath]
      responses:
        200:
          description: The new API key (shown once)
          content: {application/json: {schema: TenantKey}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    require_admin()
    api_key = services().tenants.rotate(validate_tenant_id(tenant))
    return _no_store(jsonify({"id": tenant, "api_key": api_key}))


@admin.delete("/tenants/<tenant>/key")
def revoke_key(tenant: str) -> tuple[str, int]:
    """Revoke the tenant's API key; only the admin token acts for it until a rotate.
    ---
    delete:
      tags: [admin]
      security: [{AdminToken: []}]
      parameters: [TenantPath]
      responses:
        204:
          description: The key is revoked
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    require_admin()
    services().tenants.revoke(validate_tenant_id(tenant))
    return "", 204
