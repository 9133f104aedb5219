"""Who is calling: the tenant a request names, and the key that proves it.

A request names its tenant with ``X-Tenant-ID`` or a ``Host`` mapped to a
tenant's domain, and must always carry ``Authorization: Bearer <key>``: the
tenant's own key or the admin token. The Host header alone never authenticates.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, g, request

from shared.errors import Forbidden, MalformedRequest, Unauthorized
from shared.tenants import validate_tenant_id


def wapair() -> dict[str, Any]:
    """The app's collaborators (settings, redis, celery, tenants, store)."""
    return dict(current_app.extensions["wapair"])


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <key>")
    return token.strip()


def _is_admin(token: str) -> bool:
    admin = wapair()["settings"].admin_token
    return bool(admin) and hmac.compare_digest(token.encode(), admin.encode())


def require_admin() -> None:
    """Allow only the admin token."""
    if not wapair()["settings"].admin_token:
        raise Forbidden("the admin API is disabled: set ADMIN_TOKEN")
    if not _is_admin(_bearer()):
        raise Unauthorized("the admin token is wrong")


def authenticated_tenant() -> str:
    """The tenant this request acts for, after checking its credentials.

    Cached for the request (the rate limiter asks before the view does).
    A key of another tenant is 403, a key of no tenant 401.
    """
    cached = g.get("wapair_tenant")
    if cached is not None:
        return str(cached)
    tenant = _authenticate()
    g.wapair_tenant = tenant
    return tenant


def _authenticate() -> str:
    token = _bearer()
    tenants = wapair()["tenants"]
    named = request.headers.get("X-Tenant-ID")
    if named is not None:
        tenant = validate_tenant_id(named.strip())
    else:
        mapped = tenants.tenant_for_domain(request.host)
        if mapped is None:
            raise MalformedRequest("name the tenant with X-Tenant-ID (or a Host mapped to it)")
        tenant = mapped
    if _is_admin(token):
        return str(tenants.require(tenant))
    if tenants.key_matches(tenant, token):
        return tenant
    owner = tenants.tenant_for_key(token)
    if owner is not None and owner != tenant:
        raise Forbidden("this key belongs to another tenant")
    raise Unauthorized("the key is not valid for this tenant")
