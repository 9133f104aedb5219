"""The one factory for Redis clients (no module-level clients anywhere).

Every Redis use goes through here: the state and lease client, the event
readers, the async stream hub, the Celery broker and result backend, redbeat
and the rate limiter (which borrows the API's pool). With ``REDIS_SENTINELS``
set, each follows Sentinel to the current primary; ``REDIS_URL`` then gives only
the database number, the password and TLS (``rediss://``).

A client asked for while Sentinel is switching primaries raises
``redis.ConnectionError`` (``MasterNotFoundError`` is one), which the API turns
into 503 with Retry-After and the workers treat as an outage.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
from redis.sentinel import Sentinel

from shared.config import Settings
from shared.redis_pool import PinnedPool, PinnedSentinelPool

#: What a client is for; it decides the timeouts.
Purpose = Literal["state", "events", "cli"]
#: Seconds a Sentinel may take to answer "who is the primary".
SENTINEL_TIMEOUT_S = 0.5


def _fail_fast_timeout(settings: Settings) -> float:
    # A dead Redis must never outlast a lease's safety margin.
    return max(0.5, min(2.0, settings.lease_ttl_s / 10))


def ack_replicas(settings: Settings) -> tuple[int, int]:
    """(replicas, timeout ms) a write the API answers as accepted must reach (``WAIT``):
    ``REDIS_ACK_REPLICAS``, by default 1 with Sentinel and 0 without. The wait is at
    most the loss window and half the fail-fast socket timeout, so a missing replica
    is a clear 503, never a socket timeout."""
    count = settings.redis_ack_replicas
    if count is None:
        count = 1 if settings.uses_sentinel else 0
    if not count:
        return 0, 0
    seconds = min(settings.redis_loss_window_s, _fail_fast_timeout(settings) / 2)
    return count, max(1, round(seconds * 1000))


def _timeouts(settings: Settings, purpose: Purpose) -> dict[str, Any]:
    if purpose == "events":
        # XREAD BLOCK outlasts the fail-fast timeout: one heartbeat plus slack.
        return {"socket_timeout": settings.events_heartbeat_s + 5, "socket_connect_timeout": 2}
    timeout = _fail_fast_timeout(settings)
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def url_parts(settings: Settings) -> dict[str, Any]:
    """Database, credentials and TLS from ``REDIS_URL`` (for the Sentinel-managed clients)."""
    parsed = urlsplit(settings.redis_url)
    db = parsed.path.strip("/") or "0"
    parts: dict[str, Any] = {"db": int(db) if db.isdigit() else 0}
    if parsed.username:
        parts["username"] = unquote(parsed.username)
    if parsed.password:
        parts["password"] = unquote(parsed.password)
    if parsed.scheme == "rediss":
        parts["ssl"] = True
    return parts


def _sentinel(settings: Settings, purpose: Purpose) -> Sentinel:
    return Sentinel(list(settings.redis_sentinels),
                    sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S,
                                     "socket_connect_timeout": SENTINEL_TIMEOUT_S},
                    **_timeouts(settings, purpose), **url_parts(settings))


def connect_redis(settings: Settings, purpose: Purpose = "state") -> redis.Redis:
    """A client whose calls fail fast (``events``: one that can block for a heartbeat)."""
    if settings.uses_sentinel:
        assert settings.redis_sentinel_master is not None  # load_settings checks the pair
        # The master_for client asks the Sentinels on every new connection and
        # drops its connections when the primary it knew turns replica.
        return _sentinel(settings, purpose).master_for(
            settings.redis_sentinel_master, connection_pool_class=PinnedSentinelPool,
            health_check_interval=30, retry_on_timeout=False)
    # Each thread keeps its connection (shared/redis_pool.py): no checkout per call.
    pool = PinnedPool.from_url(settings.redis_url, health_check_interval=30,
                               retry_on_timeout=False, **_timeouts(settings, purpose))
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # the client owns the pool it was given
    return client


def connect_redis_async(settings: Settings, purpose: Purpose = "state",
                        **options: Any) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`connect_redis` (the API's stream hub)."""
    timeouts = {**_timeouts(settings, purpose), **options}
    if settings.uses_sentinel:
        assert settings.redis_sentinel_master is not None
        single = bool(timeouts.pop("single_connection_client", False))
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(settings.redis_sentinels),
            sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S,
                             "socket_connect_timeout": SENTINEL_TIMEOUT_S},
            **url_parts(settings))
        pool = redis.asyncio.sentinel.SentinelConnectionPool(
            settings.redis_sentinel_master, sentinel, is_master=True,
            **{**sentinel.connection_kwargs, **timeouts})
        client = redis.asyncio.Redis(connection_pool=pool, single_connection_client=single)
        client.auto_close_connection_pool = True  # the client owns the pool it was given
        return client
    return redis.asyncio.Redis.from_url(settings.redis_url, **timeouts)


def broker_url(settings: Settings) -> str:
    """The Celery broker and result backend URL: ``REDIS_URL``, or kombu's ``sentinel://`` list."""
    if not settings.uses_sentinel:
        return settings.redis_url
    parts = url_parts(settings)
    auth = ""
    if "password" in parts:
        auth = f"{quote(parts.get('username', ''), safe='')}:{quote(parts['password'], safe='')}@"
    return ";".join(f"sentinel://{auth}{host}:{port}/{parts['db']}"
                    for host, port in settings.redis_sentinels)


def sentinel_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's and Celery's Sentinel transports need besides the URL."""
    if not settings.uses_sentinel:
        return {}
    return {"master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT_S,
                                "socket_connect_timeout": SENTINEL_TIMEOUT_S}}


def redbeat_config(settings: Settings, socket_timeout: float) -> dict[str, Any]:
    """``redbeat_redis_url`` and ``redbeat_redis_options`` for the same Redis."""
    options: dict[str, Any] = {"socket_timeout": socket_timeout}
    if not settings.uses_sentinel:
        return {"redbeat_redis_url": settings.redis_url,
                "redbeat_redis_options": {**options, "socket_connect_timeout": 1.0}}
    parts = url_parts(settings)
    options.update(sentinels=list(settings.redis_sentinels),
                   service_name=settings.redis_sentinel_master, db=parts["db"],
                   sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S,
                                    "socket_connect_timeout": SENTINEL_TIMEOUT_S})
    for name in ("username", "password"):
        if name in parts:
            options[name] = parts[name]
    config: dict[str, Any] = {"redbeat_redis_url": "redis-sentinel://",
                              "redbeat_redis_options": options}
    if parts.get("ssl"):
        config["redbeat_redis_use_ssl"] = {}
    return config
