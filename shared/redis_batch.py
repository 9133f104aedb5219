"""A few Redis commands in one round trip, without redis-py's ``Pipeline`` object.

``GET /api/whatsapp/status`` needs four small reads (the key hash, the session,
the pairing, the lease). Sent as a ``Pipeline`` they cost ~27 µs of client CPU
more than a single ``HGETALL`` (measured in-process, docs/performance.md);
packed into one write on a pooled connection and read back in order they cost
the same as that one command. One Lua script reading the four keys would be
one command, but costs Redis twice the CPU of the four plain reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis


def read_batch(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The replies of ``commands`` (read-only, so safe to resend), sent in one packed write.

    Replies are parsed as the client parses them (its response callbacks). A
    connection error is retried as the client's pipelines retry it (a pooled
    socket may have gone stale); any error drops the connection, so no unread
    reply is left on it. Error replies are raised (``redis.ResponseError``).
    On a Redis Cluster (no single connection to pack onto) they go in a Cluster
    pipeline, which sends them to the node of each key.
    """
    if isinstance(client, redis.RedisCluster):
        pipe = client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        def send_and_read() -> list[Any]:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            failure: redis.ResponseError | None = None
            for command in commands:
                try:
                    replies.append(client.parse_response(connection, command[0]))
                except redis.ResponseError as e:  # keep reading: every reply leaves the socket
                    failure = failure or e
            if failure is not None:
                raise failure
            return replies

        return list(connection.retry.call_with_retry(
            send_and_read, lambda _error: connection.disconnect()))
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
