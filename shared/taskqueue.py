"""The Celery app, built from the settings object, and how commands are kicked.

Design (b) of DESIGN.md §4: commands wait in a per-tenant Redis mailbox that
only the lease holder drains; Celery carries cheap, idempotent ``wapair.kick``
tasks. A kick goes to the owner's own queue when the tenant has an owner, else
to the shared claims queue where any worker may claim the tenant.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

from shared import kombu_redis
from shared.config import Settings
from shared.redis_client import broker_url, redbeat_config, sentinel_transport_options

CLAIMS_QUEUE = "wapair.claims"
KICK_TASK = "wapair.kick"
RECONCILE_TASK = "wapair.reconcile"
WEBHOOK_TASK = "wapair.webhook"
WEBHOOK_SWEEP_TASK = "wapair.webhook_sweep"
CLEANUP_TASK = "wapair.cleanup"
BROKER_SOCKET_TIMEOUT_S = 1.5


def worker_queue(worker_id: str) -> Queue:
    """The queue only ``worker_id`` consumes: kicks for tenants it owns.

    The worker declares it and the API publishes to it with this one
    definition (its own direct exchange); a queue declared with another
    exchange would silently drop every kick sent to it.
    """
    name = f"wapair.w.{worker_id}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def create_celery(settings: Settings, name: str = "wapair") -> Celery:
    """Build the Celery app both the API (to send) and the workers (to run) use."""
    url = broker_url(settings)
    app = Celery(name, broker=url, backend=url)
    if settings.uses_sentinel:
        app.conf.broker_transport = kombu_redis.SENTINEL_TRANSPORT
        if urlsplit(settings.redis_url).scheme == "rediss":
            tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
            app.conf.broker_use_ssl = app.conf.redis_backend_use_ssl = tls
    elif urlsplit(settings.redis_url).scheme in ("redis", "rediss"):
        # kombu's own transport, minus a redis-py client built per publish (see there).
        app.conf.broker_transport = kombu_redis.TRANSPORT
    app.conf.update(
        task_default_queue=CLAIMS_QUEUE,
        task_queues=[Queue(CLAIMS_QUEUE)],
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_expires=3600,
        # A command task is acknowledged only after it ran, so a worker killed
        # mid-task leaves the kick to be redelivered; kicks are idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # visibility_timeout: longer than any task (kicks take milliseconds), so
        # nothing is redelivered while it still runs. The socket timeouts bound
        # every broker call: a Redis that stalls without closing the connection
        # (paused, partitioned) must fail a publish in seconds, not hang the API
        # request; socket_timeout stays above the consumer's 1 s BRPOP timeout.
        broker_transport_options={
            "visibility_timeout": 600, "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": 1.0, "health_check_interval": 5,
            **sentinel_transport_options(settings),
        },
        result_backend_transport_options=sentinel_transport_options(settings),
        broker_connection_timeout=1.0,
        broker_connection_retry_on_startup=True,
        # A dead broker must fail a request quickly (503), not hang it.
        task_publish_retry_policy={
            "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        # Workers send task events only while a monitor asks for them: Flower turns
        # them on by itself (its --enable_events, every 5 s) and they go off again
        # when it stops; nobody watching pays ~0.7 ms of each kick's path for them.
        worker_send_task_events=False,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # Below the 30 s grace period orchestrators give by default.
        worker_soft_shutdown_timeout=10.0,
        beat_scheduler="redbeat.RedBeatScheduler",
        **redbeat_config(settings, BROKER_SOCKET_TIMEOUT_S),
        redbeat_lock_timeout=int(max(30, settings.cleanup_interval_s * 5)),
        beat_max_loop_interval=max(1, int(settings.cleanup_interval_s)),
        beat_schedule={
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.cleanup_interval_s},
            # Re-sends webhook deliveries whose task was lost (broker down at the time).
            "webhook-sweep": {"task": WEBHOOK_SWEEP_TASK,
                              "schedule": max(10.0, settings.cleanup_interval_s)},
            "cleanup": {"task": CLEANUP_TASK, "schedule": settings.cleanup_interval_s},
        },
    )
    app.conf.wapair_settings = settings
    return app


def send_kick(app: Celery, tenant: str, owner: str | None, hops: int = 0) -> None:
    """Tell the tenant's owner (or, with no owner, any worker) that mail is waiting."""
    # ignore_result: the sender does not know the task's own setting, and without
    # it every kick subscribed to (and left) a result channel: 3 round trips.
    if owner:
        queue = worker_queue(owner)
        app.send_task(KICK_TASK, args=[tenant], kwargs={"hops": hops}, queue=queue,
                      exchange=queue.exchange, routing_key=queue.routing_key,
                      ignore_result=True)
    else:
        app.send_task(KICK_TASK, args=[tenant], kwargs={"hops": hops}, queue=CLAIMS_QUEUE,
                      ignore_result=True)


def send_webhooks(app: Celery, tenant: str, event_ids: list[str]) -> None:
    """Queue one webhook delivery per event; the task gets ids only, never the URL or secret."""
    for event_id in event_ids:
        app.send_task(WEBHOOK_TASK, args=[tenant, event_id], queue=CLAIMS_QUEUE,
                      ignore_result=True)
