"""The thin Flask API: validates, authenticates, makes one atomic transition, enqueues."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api.errors import register_error_handlers
from api.services import EXTENSION, build_services
from shared.config import load_settings
from shared.errors import StoreUnavailable
from shared.tenants import TenantRegistry

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then the environment, then ``config``.

    Every collaborator is built once, in ``api.services.build_services``, and
    reached by the views through ``api.services.services()``.
    """
    settings = load_settings(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    found = app.extensions[EXTENSION] = build_services(settings)
    register_error_handlers(app)
    found.limits.init_app(app)
    _index_key_hashes(found.tenants)

    from api.admin import admin
    from api.health import health
    from api.live import init_live
    from api.messages import messages
    from api.metrics import install_request_metrics, metrics
    from api.openapi import openapi
    from api.whatsapp import whatsapp

    app.register_blueprint(health)
    app.register_blueprint(whatsapp)
    app.register_blueprint(messages)
    app.register_blueprint(admin)
    init_live(app)
    app.register_blueprint(metrics)
    install_request_metrics(app)
    app.register_blueprint(openapi)
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
