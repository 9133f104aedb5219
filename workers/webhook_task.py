"""The ``wapair.webhook`` task: a thin wrapper over ``shared.webhooks.WebhookDeliverer``.

Its arguments are the tenant id and the event id only; the URL and the secret
stay in Redis. A failed attempt is retried by Celery after the deliverer's
backoff (exponential, with jitter), until WEBHOOK_MAX_ATTEMPTS.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from shared.config import Settings
from shared.events import validate_event_id
from shared.redis_client import connect_redis
from shared.taskqueue import WEBHOOK_SWEEP_TASK, WEBHOOK_TASK, send_webhooks
from shared.tenants import validate_tenant_id
from shared.webhooks import WebhookDeliverer


def build_deliverer(settings: Settings) -> WebhookDeliverer:
    """The deliverer a worker process uses, from its settings."""
    return WebhookDeliverer(connect_redis(settings), max_attempts=settings.webhook_max_attempts,
                            backoff_s=settings.webhook_backoff_s,
                            timeout_s=settings.webhook_timeout_s)


def register_webhook_task(app: Celery) -> None:
    """Define ``wapair.webhook`` on ``app``; the deliverer is built on first use."""
    built: list[WebhookDeliverer] = []
    lock = threading.Lock()

    def deliverer() -> WebhookDeliverer:
        with lock:
            if not built:
                built.append(build_deliverer(app.conf.wapair_settings))
            return built[0]

    @app.task(name=WEBHOOK_TASK, bind=True, ignore_result=True, max_retries=None)
    def webhook(self: Any, tenant: str, event_id: str) -> str:
        """POST one event to the tenant's webhook; retry later on failure."""
        attempt = int(self.request.retries) + 1
        outcome = deliverer().attempt(validate_tenant_id(tenant), validate_event_id(event_id),
                                      attempt)
        if outcome.status == "retry":
            raise self.retry(countdown=outcome.delay_s)
        return outcome.status

    @app.task(name=WEBHOOK_SWEEP_TASK, ignore_result=True)
    def webhook_sweep() -> int:
        """Beat's sweep: re-send webhook deliveries whose task never ran."""
        return deliverer().sweep(lambda tenant, ids: send_webhooks(app, tenant, ids))
