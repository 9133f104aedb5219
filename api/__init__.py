"""The thin Flask API: validates, authenticates, makes one atomic transition, enqueues."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api.auth import authenticated_tenant
from api.errors import register_error_handlers
from api.ratelimit import RateLimits
from api.services import EXTENSION, THREAD_STREAMS, Services
from api.stream_hub import StreamHub
from shared.config import Settings, load_settings
from shared.errors import StoreUnavailable
from shared.events import EventLog
from shared.messages import MessageStore
from shared.outbound import OutboundPolicy
from shared.redis_client import ack_replicas, connect_redis
from shared.state import SessionStore
from shared.taskqueue import create_celery, send_webhooks
from shared.tenants import TenantRegistry

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then the environment, then ``config``.

    Every collaborator is built once, in ``build_services``, and reached by the
    views through ``api.services.services()``.
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


def build_services(settings: Settings) -> Services:
    """Every collaborator the API needs, from ``settings``."""
    client = connect_redis(settings, purpose="state")
    events_client = connect_redis(settings, purpose="events")
    celery = create_celery(settings)

    def dispatch_webhooks(tenant: str, ids: list[str]) -> None:
        send_webhooks(celery, tenant, ids)

    return Services(
        settings=settings,
        redis=client,
        events_redis=events_client,
        events=EventLog(events_client),
        celery=celery,
        tenants=TenantRegistry(client),
        store=SessionStore(client, events_maxlen=settings.events_maxlen,
                           on_webhook_events=dispatch_webhooks,
                           replicas=ack_replicas(settings)),
        messages=MessageStore(client, events_maxlen=settings.events_maxlen,
                              ttl_s=settings.message_ttl_s, on_webhook_events=dispatch_webhooks,
                              replicas=ack_replicas(settings)),
        outbound=OutboundPolicy(settings.webhook_allow_private),
        stream_permits=threading.BoundedSemaphore(settings.events_max_streams),
        thread_stream_permits=threading.BoundedSemaphore(
            min(THREAD_STREAMS, settings.events_max_streams)),
        limits=RateLimits(settings, client, authenticated_tenant),
        hub=StreamHub(settings, settings.events_heartbeat_s, settings.events_stream_max_s),
        admin_token=settings.admin_token.encode() if settings.admin_token else b"",
    )


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
