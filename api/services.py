"""What the API's views work with, built once per app by ``create_app``.

One typed object instead of a dict of collaborators each blueprint completed
on its own: the settings, the one fail-fast Redis client and the events client
(both from ``shared.redis_client.connect_redis``, nowhere else), the Celery
app that sends kicks, the stores, the outbound policy, the rate limits and the
stream hub. Views reach it with :func:`services`; tests with
:func:`services_of`. Things a request would otherwise rebuild (the message
store, the webhook configs, the admin token's bytes) are built here once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from flask import Flask, current_app
from redis import Redis

from api.ratelimit import RateLimits
from api.stream_hub import StreamHub
from shared.config import Settings
from shared.errors import StoreUnavailable
from shared.events import EventLog
from shared.messages import MessageStore
from shared.outbound import OutboundPolicy
from shared.state import SessionStore
from shared.taskqueue import send_kick
from shared.tenants import TenantRegistry
from shared.webhooks import WebhookConfigs

EXTENSION = "wapair"
#: Streams one process serves on threads where it cannot hand them to the hub.
THREAD_STREAMS = 2


@dataclass(eq=False)
class Services:
    """The API's collaborators; one per app, shared by every request thread."""

    settings: Settings
    #: Fail-fast client: state, tenants, limiter storage, metrics gauges.
    redis: Redis
    #: Its own client: ``XREAD BLOCK`` outlasts the fail-fast socket timeout.
    events_redis: Redis
    events: EventLog
    celery: Celery
    tenants: TenantRegistry
    store: SessionStore
    messages: MessageStore
    #: Which hosts a tenant's URLs may reach (tests swap in one with a fixed resolver).
    outbound: OutboundPolicy
    stream_permits: threading.BoundedSemaphore
    thread_stream_permits: threading.BoundedSemaphore
    limits: RateLimits
    hub: StreamHub
    #: ``ADMIN_TOKEN`` as bytes, for the constant-time comparison (empty: admin API off).
    admin_token: bytes = b""
    #: The OpenAPI document, built on its first request.
    openapi: dict[str, Any] | None = field(default=None, repr=False)

    def kick(self, tenant: str, owner: str, *, if_lost: str) -> None:
        """Tell the tenant's owner (or any worker, to claim it) that its mailbox has mail.

        The command is already safe in the mailbox; a broker that refuses the
        kick is a 503 whose message says what happens next (``if_lost``).
        """
        try:
            send_kick(self.celery, tenant, owner or None)
        except Exception as e:  # kombu raises several types
            raise StoreUnavailable(
                f"queued, but the broker did not take the notification; {if_lost}") from e

    def webhook_configs(self) -> WebhookConfigs:
        """The tenants' webhook settings, checked against the current outbound policy."""
        return WebhookConfigs(self.redis, outbound=self.outbound)

    def close(self) -> None:
        """Close both Redis clients' connections (tests build many apps on one Redis)."""
        self.redis.close()
        self.events_redis.close()


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found


def services_of(app: Flask) -> Services:
    """``app``'s services (tests, the CLI, benchmarks)."""
    found: Services = app.extensions[EXTENSION]
    return found
