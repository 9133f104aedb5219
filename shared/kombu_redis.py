"""kombu's Redis transport, reusing one redis-py client per channel for its plain commands.

kombu builds a new ``redis.Redis`` around the channel's connection pool for every
publish, late ack and queue-size check (``Channel.conn_or_acquire``). Under
redis-py 8 each build costs ~70 µs (it fills a table of ~200 reply callbacks).
That happens twice per pairing in the API (the kick and its task-sent event) and
four to five times in the worker that runs it (the late ack's bookkeeping, the
task events Flower reads). A client object holds no connection of its own (each
command borrows one from the pool), so one per channel serves every thread; it
is rebuilt whenever kombu replaces the pool (after a fork or a reconnect).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

#: For ``broker_transport`` (Celery) with a ``redis://`` or ``rediss://`` URL.
TRANSPORT = "shared.kombu_redis:Transport"
#: The same with kombu's ``sentinel://`` URL list (REDIS_SENTINELS).
SENTINEL_TRANSPORT = "shared.kombu_redis:SentinelTransport"


class _KeepsPlainClient:
    """Keeps the plain (non-polling) client of a kombu Redis channel."""

    _plain_client: Any = None
    pool: Any

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the polling client: kombu keeps it itself
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        transport = getattr(self, "connection", None)
        if getattr(self, "_pool", None) is None and getattr(transport, "client", 1) is None:
            # The channel is being closed after its connection was released (a broker
            # connection error under Sentinel): kombu would build a pool from no
            # connection info and end the worker with an AttributeError. A connection
            # error is what kombu's close ignores; the unacked messages stay for the
            # visibility-timeout restore.
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        pool = self.pool
        client = self._plain_client
        if client is None or client.connection_pool is not pool:
            client = self._plain_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(_KeepsPlainClient, kombu_redis.Channel):
    """kombu's channel, with the plain (non-polling) client kept."""


class SentinelChannel(_KeepsPlainClient, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel, with the plain client kept; its pool follows the
    primary that the Sentinels name, and kombu rebuilds it after a connection error."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel
