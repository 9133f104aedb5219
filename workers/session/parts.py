"""The collaborators a SessionHost works with: the lease keeper, the session and
message stores and the recovery cache, over one Redis client (built together by
``session_parts``; workers/bootstrap.py passes them in)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.clock import Clock
from shared.config import Settings
from shared.events import WebhookDispatch
from shared.lease import LeaseKeeper
from shared.messages import MessageStore
from shared.redis_client import ack_replicas
from shared.state import SessionStore
from workers.recovery import RecoveryCache
from workers.session.observers import RenewalMetrics


@dataclass(frozen=True)
class SessionParts:
    """What a SessionHost reads and writes Redis through."""

    leases: LeaseKeeper
    store: SessionStore
    messages: MessageStore
    recovery: RecoveryCache


def session_parts(client: redis.Redis, settings: Settings, worker_id: str, clock: Clock,
                  on_webhook_events: WebhookDispatch | None = None) -> SessionParts:
    """The parts for worker ``worker_id``; events written by the stores call for their
    webhook deliveries through ``on_webhook_events`` (shared.events)."""
    return SessionParts(
        leases=LeaseKeeper(client, worker_id, settings.lease_ttl_s, clock=clock,
                           observer=RenewalMetrics(),
                           loss_window_s=settings.redis_loss_window_s),
        store=SessionStore(client, clock, events_maxlen=settings.events_maxlen,
                           on_webhook_events=on_webhook_events),
        messages=MessageStore(client, clock, ttl_s=settings.message_ttl_s,
                              events_maxlen=settings.events_maxlen,
                              on_webhook_events=on_webhook_events,
                              replicas=ack_replicas(settings)),
        # Kept a while after a fence: an empty Redis may come back after an outage.
        recovery=RecoveryCache(client, clock, max(20 * settings.lease_ttl_s, 120)),
    )
