"""Who is calling: the tenant a request names, and the key that proves it.

A request names its tenant with ``X-Tenant-ID`` or a ``Host`` mapped to a
tenant's domain, and must always carry ``Authorization: Bearer <key>``: the
tenant's own key or the admin token. The Host header alone never authenticates.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import redis
from flask import g, request

from api.services import services
from shared.errors import Forbidden, MalformedRequest, NotFound, StoreUnavailable, Unauthorized
from shared.redis_batch import read_batch
from shared.tenants import validate_tenant_id


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <key>")
    return token.strip()


def _is_admin(token: str) -> bool:
    admin = services().admin_token
    return bool(admin) and hmac.compare_digest(token.encode(), admin)


def require_admin() -> None:
    """Allow only the admin token."""
    if not services().admin_token:
        raise Forbidden("the admin API is disabled: set ADMIN_TOKEN")
    if not _is_admin(_bearer()):
        raise Unauthorized("the admin token is wrong")


def _named_tenant() -> str:
    named = request.headers.get("X-Tenant-ID")
    if named is not None:
        return validate_tenant_id(named.strip())
    mapped = services().tenants.tenant_for_domain(request.host)
    if mapped is None:
        raise MalformedRequest("name the tenant with X-Tenant-ID (or a Host mapped to it)")
    return str(mapped)


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
    tenants = services().tenants
    tenant = _named_tenant()
    if _is_admin(token):
        return str(tenants.require(tenant))
    if tenants.key_matches(tenant, token):
        return tenant
    _refuse(token, tenant)


def _refuse(token: str, tenant: str) -> NoReturn:
    owner = services().tenants.tenant_for_key(token)
    if owner is not None and owner != tenant:
        raise Forbidden("this key belongs to another tenant")
    raise Unauthorized("the key is not valid for this tenant")


def authenticated_read(
    reads: Callable[[str], list[tuple[str, ...]]],
) -> tuple[str, list[Any]]:
    """Like :func:`authenticated_tenant`, plus the replies of the commands ``reads`` gives.

    The key check and the reads share one round trip; the replies are
    returned only once the key matched, so nothing is shown to a caller who
    failed to authenticate (the reads change nothing).
    """
    cached = g.get("wapair_tenant")
    token = "" if cached is not None else _bearer()
    tenant = str(cached) if cached is not None else _named_tenant()
    tenants = services().tenants
    admin = cached is None and _is_admin(token)
    commands = reads(tenant)
    if cached is None:
        commands = [tenants.key_hash_command(tenant), *commands]
    try:
        replies = read_batch(services().redis, commands)
    except redis.RedisError as e:
        raise StoreUnavailable("could not reach Redis to read the tenant") from e
    if cached is not None:
        return tenant, replies
    stored, *replies = replies
    if admin:
        if stored is None:
            raise NotFound(f"unknown tenant {tenant}", tenant=tenant)
    elif not tenants.stored_key_matches(stored, token):
        _refuse(token, tenant)
    g.wapair_tenant = tenant
    return tenant, replies


View = TypeVar("View", bound=Callable[..., Any])


def rate_limited(view: View) -> View:
    """Mark a view as one of ``RATE_LIMITED_ENDPOINTS`` (``api.ratelimit``): its limits are
    checked first, per tenant and per address."""
    @wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        services().limits.check(str(request.endpoint))
        return view(*args, **kwargs)

    return limited  # type: ignore[return-value]
