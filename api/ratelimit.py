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

Which endpoints are limited is the table ``RATE_LIMITED_ENDPOINTS``; a view
says it is one with ``@rate_limited`` (``api.auth``), which checks the limits before the view
body runs and adds the headers to whatever answer follows (a 429 included).
Nothing is wrapped or reordered after the blueprints are registered, and the
other endpoints pay nothing: flask-limiter's app-wide hooks are not kept.

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
from flask import Flask, Response, after_this_request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from flask_limiter.util import get_qualified_name, get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

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


def _tenant_or_address(tenant_of: Callable[[], str]) -> str:
    try:
        return f"tenant:{tenant_of()}"
    except WapairError:
        # The view will answer 401/403/4xx/503; count the attempt per address.
        return f"unauthenticated:{get_remote_address()}"


def _limit_target(endpoint: str) -> Callable[[], None]:
    """What flask-limiter files an endpoint's limits under (it keys them by a callable's name)."""
    def target() -> None:
        return None

    target.__name__ = target.__qualname__ = endpoint
    return target


class RateLimits:
    """The two limits of each endpoint in ``RATE_LIMITED_ENDPOINTS``, on ``client``'s pool.

    ``tenant_of`` names the request's authenticated tenant (``api.auth``), or raises
    a ``WapairError`` when it has none; such a request counts against its address.
    """

    def __init__(self, settings: Settings, client: redis.Redis,
                 tenant_of: Callable[[], str]) -> None:
        self.settings = settings
        self.limiter = Limiter(
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
        if not any(isinstance(f, _NoTraceback) for f in self.limiter.logger.filters):
            self.limiter.logger.addFilter(_NoTraceback())
        per_tenant = self.limiter.limit(settings.rate_limit_tenant,
                                        key_func=partial(_tenant_or_address, tenant_of))
        per_address = self.limiter.shared_limit(settings.rate_limit_address, scope="commands",
                                                key_func=_client_address)
        self._names: dict[str, str] = {}
        for endpoint in RATE_LIMITED_ENDPOINTS:
            target = _limit_target(endpoint)
            per_address(per_tenant(target))  # registers both, tenant first; the wrapper is unused
            self._names[endpoint] = get_qualified_name(target)
        self._inject_headers: Callable[[Response], Any] = lambda response: response

    def init_app(self, app: Flask) -> None:
        """The proxy rule, the limiter's configuration and its 429 handler, on ``app``."""
        if self.settings.trusted_proxy_hops:
            hops = self.settings.trusted_proxy_hops
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
        self.limiter.init_app(app)
        self._take_limiter_hooks(app)

        @app.errorhandler(RateLimitExceeded)
        def _rate_limited(error: RateLimitExceeded) -> tuple[Response, int]:
            return error_response(429, "rate_limited",
                                  f"rate limit exceeded ({error.description}); retry later")

    def _take_limiter_hooks(self, app: Flask) -> None:
        """Drop the before/after/teardown hooks flask-limiter puts on every request.

        They resolved the endpoint and its limits on every request, limited or
        not (py-spy: ~6 % of a status request, docs/performance.md). Only its
        header hook is kept, to call from :meth:`check`; the other two are not
        needed (the limits are checked there, and its per-request context lives
        on the request context, which ends with the request).
        """
        limiter = self.limiter

        def owned(hook: Any) -> bool:
            return getattr(hook, "__self__", None) is limiter or (
                isinstance(hook, partial) and limiter in hook.args)

        tables: tuple[dict[Any, list[Any]], ...] = (
            app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        injects = [h for h in app.after_request_funcs.get(None, []) if owned(h)]
        for table in tables:
            table[None] = [h for h in table.get(None, []) if not owned(h)]
        if injects:
            self._inject_headers = injects[0]  # partial(Limiter.__inject_headers, limiter)

    def check(self, endpoint: str) -> None:
        """Count this request against ``endpoint``'s limits (RateLimitExceeded when over);
        its answer, whatever it is, gets the RateLimit headers."""
        name = self._names[endpoint]
        after_this_request(self._headers)
        # What flask-limiter's own decorator calls before the view it wraps.
        self.limiter._check_request_limit(in_middleware=False, callable_name=name)

    def _headers(self, response: Response) -> Response:
        return _standard_headers(self._inject_headers(response))


def _standard_headers(response: Response) -> Response:
    """RateLimit-Reset in seconds (not a timestamp); Retry-After only where it means something."""
    reset = response.headers.get("RateLimit-Reset")
    if reset is not None and reset.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    if response.status_code < 400 and "RateLimit-Limit" in response.headers:
        response.headers.pop("Retry-After", None)
    return response
