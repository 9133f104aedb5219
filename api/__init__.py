"""The thin Flask API: validates, authenticates, makes one atomic transition, enqueues."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api.errors import register_error_handlers
from shared.config import load_settings
from shared.errors import StoreUnavailable
from shared.outbound import OutboundPolicy
from shared.redis_client import connect_redis
from shared.state import SessionStore
from shared.taskqueue import create_celery
from shared.tenants import TenantRegistry

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then the environment, then ``config``."""
    settings = load_settings(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    client = connect_redis(settings)
    app.extensions["wapair"] = {
        "settings": settings,
        "redis": client,
        "celery": create_celery(settings),
        "tenants": TenantRegistry(client),
        "store": SessionStore(client, events_maxlen=settings.events_maxlen),
        # Which hosts a tenant's URLs may reach (tests swap in one with a fixed resolver).
        "outbound": OutboundPolicy(settings.webhook_allow_private),
    }
    register_error_handlers(app)
    _index_key_hashes(app.extensions["wapair"]["tenants"])

    from api.admin import admin
    from api.health import health
    from api.messages import messages
    from api.metrics import install_request_metrics, metrics
    from api.openapi import openapi
    from api.ratelimit import init_rate_limits
    from api.whatsapp import whatsapp

    app.register_blueprint(health)
    app.register_blueprint(whatsapp)
    app.register_blueprint(messages)
    app.register_blueprint(admin)

    from api.live import init_live

    init_live(app)
    app.register_blueprint(metrics)
    install_request_metrics(app)
    app.register_blueprint(openapi)
    # After every blueprint: it wraps the views it limits.
    app.extensions["wapair"]["limiter"] = init_rate_limits(app, settings, client)
    return app


def _index_key_hashes(tenants: TenantRegistry) -> None:
    """Backfill the key-hash index once per process start (idempotent); a Redis that
    is down now leaves it to the next start, with a warning."""
    try:
        added = tenants.index_key_hashes()
    except StoreUnavailable:
        log.warning("key-hash index not checked: Redis unreachable at start")
        return
    if added:
        log.info("key-hash index: added %d tenants created before it existed", added)
