"""GET /metrics (protected) and the per-request metrics and log line of every API call."""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Flask, Response, g, request

from api.services import services
from shared import metrics as m
from shared.errors import Forbidden, Unauthorized
from shared.metrics_exposition import render
from shared.tenants import TENANT_ID

log = logging.getLogger("api.request")
metrics = Blueprint("metrics", __name__)


def _require_metrics_token() -> None:
    """METRICS_TOKEN or the admin token, as ``Authorization: Bearer``; off when neither is set."""
    settings = services().settings
    accepted = [t for t in (settings.metrics_token, settings.admin_token) if t]
    if not accepted:
        raise Forbidden("metrics are disabled: set METRICS_TOKEN (or ADMIN_TOKEN)")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not any(
        hmac.compare_digest(token.encode(), t.encode()) for t in accepted
    ):
        raise Unauthorized("send Authorization: Bearer <METRICS_TOKEN>")


@metrics.get("/metrics")
def scrape() -> Response:
    """Prometheus text format: every API process's samples plus cluster gauges from Redis.
    ---
    get:
      tags: [operations]
      security: [{MetricsToken: []}]
      responses:
        200:
          description: Prometheus text exposition format
          content: {text/plain: {schema: {type: string}}}
        401: Unauthorized
        403: Forbidden
        503: ServiceUnavailable
    """
    _require_metrics_token()
    body, content_type = render(services().redis)
    return Response(body, content_type=content_type)


def install_request_metrics(app: Flask) -> None:
    """Count every request by route (the URL rule) and status, and log one line for it."""

    @app.before_request
    def _start() -> None:
        g.wapair_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        context = g.__dict__
        started = context.pop("wapair_started", None)
        seconds = time.perf_counter() - started if started is not None else 0.0
        route = req.url_rule.rule if req.url_rule is not None else "unmatched"
        status = response.status_code
        m.http_request(route, req.method, status, seconds)
        named = req.headers.get("X-Tenant-ID", "").strip()
        fields = {"route": route, "status": status, "duration_ms": round(seconds * 1000, 1),
                  "tenant": named if TENANT_ID.fullmatch(named) else None}
        extra = context.pop("wapair_log", None)
        if extra:
            fields.update(extra)
        log.info("%s %s %d %.1fms", req.method, route, status, seconds * 1000, extra=fields)
        return response


def log_context(**fields: object) -> None:
    """Add fields (``tenant``, ``pairing_id``) to this request's log line."""
    g.wapair_log = {**g.get("wapair_log", {}), **fields}
