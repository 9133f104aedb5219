"""The ``wapair.webhook`` task: a thin wrapper over ``shared.webhooks.WebhookDeliverer``.

Its arguments are the tenant id and the event id only; the URL and the secret
stay in Redis. A failed attempt is retried by Celery after the deliverer's
backoff (exponential, with jitter), until WEBHOOK_MAX_ATTEMPTS.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery

from shared import metrics
from shared.config import Settings
from shared.events import validate_event_id
from shared.outbound import OutboundPolicy
from shared.redis_client import connect_redis
from shared.taskqueue import WEBHOOK_SWEEP_TASK, WEBHOOK_TASK, send_webhooks
from shared.tenants import validate_tenant_id
from shared.webhooks import WebhookDeliverer

log = logging.getLogger(__name__)


class WebhookDispatcher:
    """Sends webhook tasks from a thread of its own, so a state write made inside a
    WhatsApp callback never waits on the broker; anything it fails to send (or
    never sends, if the process dies) is re-sent by beat's sweep."""

    def __init__(self, send: Callable[[str, list[str]], None], capacity: int = 10_000) -> None:
        self._send = send
        self._queue: queue.Queue[tuple[str, list[str]]] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._run, name="wa-webhook-dispatch",
                                        daemon=True)
        self._thread.start()

    def submit(self, tenant: str, event_ids: list[str]) -> None:
        """Queue deliveries without blocking; a full queue leaves them to the sweep."""
        try:
            self._queue.put_nowait((tenant, event_ids))
        except queue.Full:
            log.warning("tenant %s: webhook dispatch queue full; the sweep will send %s",
                        tenant, event_ids)

    def _run(self) -> None:
        while True:
            tenant, event_ids = self._queue.get()
            try:
                self._send(tenant, event_ids)
            except Exception:  # noqa: BLE001 - the sweep re-sends what is pending
                log.warning("tenant %s: webhook deliveries %s not queued; the sweep will",
                            tenant, event_ids, exc_info=True)


def build_deliverer(settings: Settings) -> WebhookDeliverer:
    """The deliverer a worker process uses, from its settings."""
    return WebhookDeliverer(connect_redis(settings), max_attempts=settings.webhook_max_attempts,
                            backoff_s=settings.webhook_backoff_s,
                            timeout_s=settings.webhook_timeout_s,
                            outbound=OutboundPolicy(settings.webhook_allow_private))


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
        metrics.record_webhook_delivery(outcome.status)
        if outcome.status == "retry":
            raise self.retry(countdown=outcome.delay_s)
        return outcome.status

    @app.task(name=WEBHOOK_SWEEP_TASK, ignore_result=True)
    def webhook_sweep() -> int:
        """Beat's sweep: re-send webhook deliveries whose task never ran."""
        return deliverer().sweep(lambda tenant, ids: send_webhooks(app, tenant, ids))
