"""Rate limits on pair, reset and logout, kept in Redis so they hold across API replicas.

Two sets of limits guard each of those endpoints, moving windows in Redis:

- per tenant and endpoint, ``RATE_LIMIT_TENANT``, counted only once the caller
  has authenticated (so a stranger cannot spend a tenant's budget; failed
  attempts are counted per client address instead);
- per client address, shared by the three endpoints, ``RATE_LIMIT_ADDRESS``.

Every limit of a request is checked and counted in one Lua step
(``shared/lua/rate_limit.lua``), one round trip after the key check: a request
over any limit is refused and counts against none (it used to be one round trip
per limit and a third for the headers, with flask-limiter; docs/performance.md).

A breach answers 429 ``{"error": {"code": "rate_limited", ...}}`` with
``Retry-After`` and ``RateLimit-Limit/-Remaining/-Reset`` (seconds). Every
answer of a limited endpoint carries the ``RateLimit-*`` headers of the limit
refused, or of the one with the fewest hits left. That is a different 429 from
/pair's ``pairing_in_progress`` (a pairing is running). When Redis is down the
limits let requests through (the view then answers 503 itself), with one log
line and no stack trace.

Which endpoints are limited is the table ``RATE_LIMITED_ENDPOINTS``; a view
says it is one with ``@rate_limited`` (``api.auth``), which checks the limits
before the view body runs. The other endpoints pay nothing.

Behind a proxy, the client address is taken from ``X-Forwarded-For`` only for
the ``TRUSTED_PROXY_HOPS`` proxies in front of us (werkzeug's ProxyFix); with
0, the default, the header is ignored, so clients cannot pick their address.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import Flask, Response, after_this_request, request
from limits import parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import keys
from shared.config import Settings
from shared.errors import WapairError
from shared.scripts import scripts_for

log = logging.getLogger(__name__)

RATE_LIMITED_ENDPOINTS = ("whatsapp.pair", "whatsapp.reset", "whatsapp.logout")
#: The scope the per-address limits of the three endpoints share.
SHARED_SCOPE = "commands"


@dataclass(frozen=True)
class Limit:
    """One limit: ``amount`` requests in a moving window of ``window_s`` seconds."""

    amount: int
    window_s: int
    text: str  # as a person reads it: "6 per 1 minute"

    @property
    def spec(self) -> str:
        return f"{self.amount}/{self.window_s}s"


def parse_limits(raw: str) -> tuple[Limit, ...]:
    """``"6/minute;60/hour"`` as limits (the syntax of the ``limits`` package)."""
    return tuple(Limit(item.amount, item.get_expiry(), str(item)) for item in parse_many(raw))


class RateLimited(WapairError):
    """Raised when a request is over one of its endpoint's limits."""

    status = 429
    code = "rate_limited"


@dataclass(frozen=True)
class Verdict:
    """What one check found: the limit it reports and that limit's state."""

    allowed: bool
    limit: Limit
    remaining: int
    reset_s: int  # whole seconds until the limit's oldest hit leaves its window

    def headers(self, response: Response) -> Response:
        response.headers["RateLimit-Limit"] = str(self.limit.amount)
        response.headers["RateLimit-Remaining"] = str(self.remaining)
        response.headers["RateLimit-Reset"] = str(self.reset_s)
        if not self.allowed:
            response.headers["Retry-After"] = str(max(1, self.reset_s))
        return response


def client_address() -> str:
    return request.remote_addr or "127.0.0.1"


class RateLimits:
    """The limits of each endpoint in ``RATE_LIMITED_ENDPOINTS``, on ``client``.

    ``tenant_of`` names the request's authenticated tenant (``api.auth``), or raises
    a ``WapairError`` when it has none; such a request counts against its address.
    """

    def __init__(self, settings: Settings, client: redis.Redis,
                 tenant_of: Callable[[], str]) -> None:
        self.settings = settings
        self._client = client
        self._tenant_of = tenant_of
        self.per_tenant = parse_limits(settings.rate_limit_tenant)
        self.per_address = parse_limits(settings.rate_limit_address)

    def init_app(self, app: Flask) -> None:
        """The proxy rule for the client address."""
        if self.settings.trusted_proxy_hops:
            hops = self.settings.trusted_proxy_hops
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    def check(self, endpoint: str) -> None:
        """Count this request against ``endpoint``'s limits (``RateLimited`` when over
        one); its answer, whatever it is, gets the RateLimit headers."""
        address = client_address()
        try:
            who = f"tenant:{self._tenant_of()}"
        except WapairError:
            # The view will answer 401/403/4xx/503; count the attempt per address.
            who = f"unauthenticated:{address}"
        limits = [(f"{keys.RATE_LIMIT_PREFIX}:{endpoint}:{who}:{lim.spec}", lim)
                  for lim in self.per_tenant]
        limits += [(f"{keys.RATE_LIMIT_PREFIX}:{SHARED_SCOPE}:addr:{address}:{lim.spec}", lim)
                   for lim in self.per_address]
        verdict = self._count(limits)
        if verdict is None:
            return
        after_this_request(verdict.headers)
        if not verdict.allowed:
            raise RateLimited(f"rate limit exceeded ({verdict.limit.text}); retry later")

    def _count(self, limits: list[tuple[str, Limit]]) -> Verdict | None:
        args: list[int | str] = [int(time.time() * 1000), os.urandom(8).hex()]
        for _, lim in limits:
            args += [lim.amount, lim.window_s * 1000]
        try:
            allowed, index, remaining, reset_ms = scripts_for(self._client).rate_limit(
                keys=[key for key, _ in limits], args=args)
        except redis.RedisError as e:
            log.warning("rate limits not checked, Redis unreachable (%s); letting the "
                        "request through", type(e).__name__)
            return None
        return Verdict(bool(allowed), limits[int(index) - 1][1], int(remaining),
                       math.ceil(int(reset_ms) / 1000))
