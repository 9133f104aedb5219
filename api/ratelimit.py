"""Rate limits on pair, reset and logout, kept in Redis so they hold across API replicas.

Two limits guard each of those endpoints (flask-limiter, moving window, its
Redis storage on the app's own connection pool):

- per tenant and endpoint, ``RATE_LIMIT_TENANT``, counted only once the caller
  has authenticated (so a stranger cannot spend a tenant's budget; failed
  attempts are counted per client address instead);
- per client address, shared by the three endpoints, ``RATE_LIMIT_ADDRESS``.

A breach answers 429 ``{"error": {"code": "rate_limited", ...}}`` with
``Retry-After`` and ``RateLimit-Limit/-Remaining/-Reset`` (seconds). That is a
different 429 from /pair's ``pairing_in_progress`` (a pairing is running).
When Redis is down the limiter lets requests through (the view then answers
503 itself); its log lines carry no stack trace.

Behind a proxy, the client address is taken from ``X-Forwarded-For`` only for
the ``TRUSTED_PROXY_HOPS`` proxies in front of us (werkzeug's ProxyFix); with
0, the default, the header is ignored, so clients cannot pick their address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from flask import Flask, Response, request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from api.auth import authenticated_tenant
from api.errors import error_response
from shared import keys
from shared.config import Settings
from shared.errors import WapairError

RATE_LIMITED_ENDPOINTS = ("whatsapp.pair", "whatsapp.reset", "whatsapp.logout")
_HEADERS = {
    HeaderNames.LIMIT: "RateLimit-Limit",
    HeaderNames.REMAINING: "RateLimit-Remaining",
    HeaderNames.RESET: "RateLimit-Reset",
    HeaderNames.RETRY_AFTER: "Retry-After",
}


class _NoTraceback(logging.Filter):
    """Keeps flask-limiter's swallowed-error lines to one line: the type, no stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _client_address() -> str:
    return f"addr:{get_remote_address()}"


def _tenant_or_address() -> str:
    try:
        return f"tenant:{authenticated_tenant()}"
    except WapairError:
        # The view will answer 401/403/4xx/503; count the attempt per address.
        return f"unauthenticated:{get_remote_address()}"


def init_rate_limits(app: Flask, settings: Settings, client: redis.Redis) -> Limiter:
    """Install the proxy rule, the limiter and its 429 handler on ``app``."""
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    # Registered before the limiter's own after_request, so it runs after it.
    app.after_request(_standard_headers)
    limiter = Limiter(
        key_func=_client_address,
        storage_uri="redis://",
        storage_options={"connection_pool": client.connection_pool},  # type: ignore[dict-item]
        strategy="moving-window",
        key_prefix=keys.RATE_LIMIT_PREFIX,
        headers_enabled=True,
        header_name_mapping=_HEADERS,
        retry_after="delta-seconds",
        swallow_errors=True,
    )
    limiter.init_app(app)
    _only_where_limited(app, limiter)
    if not any(isinstance(f, _NoTraceback) for f in limiter.logger.filters):
        limiter.logger.addFilter(_NoTraceback())

    per_tenant = limiter.limit(settings.rate_limit_tenant, key_func=_tenant_or_address)
    per_address = limiter.shared_limit(settings.rate_limit_address, scope="commands",
                                       key_func=_client_address)
    for endpoint in RATE_LIMITED_ENDPOINTS:
        if endpoint in app.view_functions:
            view = app.view_functions[endpoint]
            app.view_functions[endpoint] = per_address(per_tenant(view))  # type: ignore[assignment]

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded) -> tuple[Response, int]:
        return error_response(429, "rate_limited",
                              f"rate limit exceeded ({error.description}); retry later")

    return limiter


def _only_where_limited(app: Flask, limiter: Limiter) -> None:
    """Run the limiter's app-wide hooks only on the endpoints it limits.

    flask-limiter hooks before, after and at the teardown of every request; a
    request filter still let it resolve the endpoint and its limits each time
    (py-spy: ~6 % of a status request's CPU, docs/performance.md). Gated here,
    the other endpoints pay one lookup of ``request.endpoint`` per hook.
    """
    def owned(hook: Any) -> bool:
        return getattr(hook, "__self__", None) is limiter or (
            isinstance(hook, partial) and limiter in hook.args)

    tables: tuple[Any, ...] = (app.before_request_funcs, app.after_request_funcs,
                               app.teardown_request_funcs)
    for table in tables:
        table[None] = [_gated(h) if owned(h) else h for h in table.get(None, [])]


def _gated(hook: Callable[..., Any]) -> Callable[..., Any]:
    def on_limited_endpoints(*args: Any) -> Any:
        if request.endpoint in RATE_LIMITED_ENDPOINTS:
            return hook(*args)
        return args[0] if args else None  # after_request hands its response on

    return on_limited_endpoints


def _standard_headers(response: Response) -> Response:
    """RateLimit-Reset in seconds (not a timestamp); Retry-After only where it means something."""
    if request.endpoint not in RATE_LIMITED_ENDPOINTS:
        return response
    reset = response.headers.get("RateLimit-Reset")
    if reset is not None and reset.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    if response.status_code < 400 and "RateLimit-Limit" in response.headers:
        response.headers.pop("Retry-After", None)
    return response
