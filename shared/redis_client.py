"""The one factory for Redis clients (no module-level clients anywhere)."""

from __future__ import annotations

import redis

from shared.config import Settings


def connect_redis(settings: Settings) -> redis.Redis:
    """A client whose calls fail fast, so a dead Redis never outlasts a lease's safety margin."""
    timeout = max(0.5, min(2.0, settings.lease_ttl_s / 10))
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
