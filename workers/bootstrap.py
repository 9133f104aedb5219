"""Wiring for one worker process, done in one place.

``build_session_host`` builds the host a Celery worker runs with every
collaborator passed in: the WhatsApp backend (its connection-host pool), one
Redis client, the parts over it (workers/session/parts.py), the kick sender and
the webhook dispatcher. Nothing is patched onto an object after it was built.
"""

from __future__ import annotations

from celery import Celery

from shared.clock import SystemClock
from shared.config import Settings
from shared.redis_client import connect_redis
from shared.taskqueue import send_kick, send_webhooks
from workers.backends import build_backend
from workers.host.pool import HostPool
from workers.session.parts import session_parts
from workers.session_host import SessionHost
from workers.webhook_task import WebhookDispatcher


def build_session_host(celery: Celery, settings: Settings, worker_id: str
                       ) -> tuple[SessionHost, HostPool]:
    """The SessionHost of a Celery worker process, and the backend pool it runs
    sessions in (shut down after the host has handed its sessions over)."""
    pool = build_backend(settings)
    client = connect_redis(settings)
    clock = SystemClock()
    # Webhook deliveries are queued off the WhatsApp callback threads.
    dispatcher = WebhookDispatcher(lambda tenant, ids: send_webhooks(celery, tenant, ids))
    parts = session_parts(client, settings, worker_id, clock, dispatcher.submit)
    host = SessionHost(
        client, settings, pool, worker_id, clock=clock, parts=parts,
        send_kick=lambda tenant, owner, hops: send_kick(celery, tenant, owner, hops),
    )
    return host, pool
