"""The broker transport: kombu's Redis transport with one plain client per channel."""

from __future__ import annotations

import uuid

import redis

from shared import kombu_redis
from shared.config import load_settings
from shared.taskqueue import create_celery


def test_the_app_publishes_through_one_client_per_channel_on_the_same_broker(
    redis_url: str, redis_client: redis.Redis,
) -> None:
    app = create_celery(load_settings({"redis_url": redis_url}, environ={}))
    queue = f"test.transport.{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as conn:
        assert conn.transport_cls == kombu_redis.TRANSPORT
        channel = conn.default_channel
        assert isinstance(channel, kombu_redis.Channel)
        built: list[object] = []
        make = kombu_redis.kombu_redis.Channel._create_client

        def counting(self: object, asynchronous: bool = False) -> object:
            client = make(self, asynchronous)
            built.append(client)
            return client

        kombu_redis.kombu_redis.Channel._create_client = counting  # type: ignore[method-assign]
        try:
            with conn.Producer() as producer:
                for i in range(5):
                    producer.publish({"n": i}, routing_key=queue, declare=[])
        finally:
            kombu_redis.kombu_redis.Channel._create_client = make  # type: ignore[method-assign]
        assert len(built) == 1, "kombu's own channel builds a client per publish"
        assert redis_client.llen(queue) == 5, "every message reached the broker"
        # A new pool (after a fork or a reconnect) gets a client of its own.
        before = channel._create_client()
        channel._disconnect_pools()
        after = channel._create_client()
        assert after is not before and after.connection_pool is channel.pool
    redis_client.delete(queue)


def test_a_socket_url_keeps_kombus_own_transport_choice() -> None:
    app = create_celery(load_settings({"redis_url": "unix:///tmp/r.sock"},
                                      environ={}))
    assert not app.conf.broker_transport
