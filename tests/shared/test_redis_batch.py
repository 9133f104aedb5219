"""read_batch: several reads in one write, parsed as the client parses them, never desynced."""

from __future__ import annotations

import pytest
import redis

from shared.redis_batch import pack, read_batch
from tests.shared.test_lease import CountingConnection


def test_replies_come_in_order_from_one_write(redis_url: str, tenant_id: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.hset(f"{tenant_id}:h", mapping={"a": "1"})
    client.set(f"{tenant_id}:s", "v")
    before = CountingConnection.writes
    replies = read_batch(client, [("HGETALL", f"{tenant_id}:h"), ("GET", f"{tenant_id}:s"),
                                  ("GET", f"{tenant_id}:none"), ("HGET", f"{tenant_id}:h", "a")])
    assert CountingConnection.writes - before == 1
    assert replies == [client.hgetall(f"{tenant_id}:h"), b"v", None, b"1"]
    client.close()
    pool.disconnect()


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    commands = [("HGET", "wa:{t}:tenant", "key_hash"), ("SET", "k", 1, "PX", 1.5),
                ("GET", b"\xff\x00"), ("HGETALL", "wa:{t\u00e9}:session")]
    assert pack(commands) == b"".join(redis.Connection().pack_commands(commands))
    with pytest.raises(TypeError):
        pack([("GET", None)])


def test_an_error_reply_is_raised_after_every_reply_was_read(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    redis_client.set(f"{tenant_id}:s", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        read_batch(redis_client, [("HGETALL", f"{tenant_id}:s"), ("GET", f"{tenant_id}:s")])
    # The pool's connection is in step: the next batch gets its own replies.
    assert read_batch(redis_client, [("GET", f"{tenant_id}:s")]) == [b"v"]


def test_a_connection_the_server_closed_is_replaced(
    redis_client: redis.Redis, redis_url: str, tenant_id: str
) -> None:
    redis_client.set(f"{tenant_id}:s", "v")
    mine = redis_client.client_id()
    other = redis.Redis.from_url(redis_url)
    assert other.client_kill_filter(_id=mine) == 1  # the pooled connection is now stale
    other.close()
    assert read_batch(redis_client, [("GET", f"{tenant_id}:s")]) == [b"v"]
    assert redis_client.client_id() != mine
