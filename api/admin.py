"""Admin endpoints (``Authorization: Bearer $ADMIN_TOKEN``)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import require_admin, wapair
from api.schemas import TenantCreateRequest, load_body

admin = Blueprint("admin", __name__, url_prefix="/api/admin")


@admin.post("/tenants")
def create_tenant() -> tuple[Response, int]:
    """Create a tenant; its API key is in this response and nowhere else."""
    require_admin()
    body = load_body(request, TenantCreateRequest())
    api_key = wapair()["tenants"].create(body["id"], body.get("domain"))
    return jsonify({"id": body["id"], "domain": body.get("domain"), "api_key": api_key}), 201


@admin.get("/tenants")
def list_tenants() -> Response:
    """Every tenant id."""
    require_admin()
    return jsonify({"tenants": wapair()["tenants"].all()})
