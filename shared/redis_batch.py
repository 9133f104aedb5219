"""A few Redis commands in one round trip, without redis-py's ``Pipeline`` object.

``GET /api/whatsapp/status`` needs four small reads (the key hash, the session,
the pairing, the lease). Sent as a ``Pipeline`` they cost ~27 µs of client CPU
more than a single ``HGETALL`` (measured in-process, docs/performance.md);
packed into one write on a pooled connection and read back in order they cost
the same as that one command (packed here, not by redis-py's ``pack_commands``,
which alone cost ~25 µs for the four). One Lua script reading the four keys would be
one command, but costs Redis twice the CPU of the four plain reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """``commands`` in RESP, as redis-py's encoder writes them (str as UTF-8, numbers as text)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes | memoryview):
                data = bytes(arg)
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {type(arg).__name__} to Redis")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_batch(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The replies of ``commands`` (read-only, so safe to resend), sent in one packed write.

    Replies are parsed as the client parses them (its response callbacks, as
    ``Redis.parse_response`` applies them, without its per-call options). A
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
    packed = pack(commands)
    callbacks = client.response_callbacks
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        def send_and_read() -> list[Any]:
            connection.send_packed_command([packed])
            replies: list[Any] = []
            failure: redis.ResponseError | None = None
            for command in commands:
                try:
                    reply = connection.read_response()
                except redis.ResponseError as e:  # keep reading: every reply leaves the socket
                    failure = failure or e
                    continue
                callback = callbacks.get(command[0])
                replies.append(callback(reply) if callback is not None else reply)
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
