"""The one Redis factory: plain URLs, and Sentinel through a real primary kill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from shared.config import load_settings
from shared.errors import ConfigError
from shared.redis_client import (
    broker_url,
    connect_redis,
    connect_redis_async,
    redbeat_config,
    url_parts,
)
from shared.taskqueue import create_celery
from tests.support.ports import wait_for
from tests.support.sentinel_proc import MASTER, SentinelGroup


def test_sentinel_settings_are_parsed_and_checked() -> None:
    settings = load_settings({"redis_sentinels": "10.0.0.1:26379, sentinel-b:26380",
                              "redis_sentinel_master": "wapair",
                              "redis_url": "rediss://:s%40cret@ignored:1/3"}, environ={})
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert url_parts(settings) == {"db": 3, "password": "s@cret", "ssl": True}
    assert broker_url(settings) == (
        "sentinel://:s%40cret@10.0.0.1:26379/3;sentinel://:s%40cret@sentinel-b:26380/3")
    assert redbeat_config(settings, 1.5)["redbeat_redis_options"]["service_name"] == "wapair"
    for bad in ({"redis_sentinels": "host-without-port"},
                {"redis_sentinels": "h:99999", "redis_sentinel_master": "m"},
                {"redis_sentinels": "h:1"},  # no master name
                {"redis_sentinel_master": "m"},
                {"redis_sentinels": "h:1", "redis_sentinel_master": "bad name"}):
        with pytest.raises(ConfigError):
            load_settings(bad, environ={})


def test_without_sentinels_everything_uses_redis_url(redis_url: str) -> None:
    settings = load_settings({"redis_url": redis_url}, environ={})
    assert broker_url(settings) == redis_url
    assert redbeat_config(settings, 1.5)["redbeat_redis_url"] == redis_url
    client = connect_redis(settings)
    assert client.ping()
    assert connect_redis(settings, purpose="events").connection_pool.connection_kwargs[
        "socket_timeout"] == settings.events_heartbeat_s + 5


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    yield group
    group.cleanup()


def test_every_client_follows_a_promotion(group: SentinelGroup) -> None:
    settings = load_settings({"redis_sentinels": group.sentinels,
                              "redis_sentinel_master": MASTER,
                              "redis_url": "redis://unused:1/2"}, environ={})
    state = connect_redis(settings)
    state.set("wa:test:before", "1")
    assert state.connection_pool.connection_kwargs["db"] == 2
    celery = create_celery(settings)
    with celery.connection_for_write() as conn:
        conn.SimpleQueue("wapair.test.sentinel").put({"n": 1})

    old = group.kill_primary()
    started = time.monotonic()
    new = group.wait_promoted(old)
    promoted_in = time.monotonic() - started
    print(f"\npromotion after kill -9: {promoted_in:.2f} s (down-after {group.down_after_ms} ms)")

    # The same client objects reach the new primary: a call or two may fail on the
    # dead connection first (the API's 503), never more than that.
    def writes() -> bool:
        state.set("wa:test:after", "1")
        return True

    wait_for(writes, 5, "the state client to write to the new primary")
    assert group.client(new, db=2).get("wa:test:after") == "1"
    assert state.get("wa:test:before") == b"1", "replicated before the kill"

    with celery.connection_for_write() as conn:
        queue = conn.SimpleQueue("wapair.test.sentinel")
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()

    async def via_async() -> bytes | None:
        client = connect_redis_async(settings, single_connection_client=True)
        try:
            return await client.get("wa:test:after")  # type: ignore[no-any-return]
        finally:
            await client.aclose()
            for sentinel in client.connection_pool.sentinel_manager.sentinels:
                await sentinel.aclose()

    assert asyncio.run(via_async()) == b"1"
    from redbeat.schedulers import get_redis

    celery.conf.update(redbeat_config(settings, 1.5))
    assert get_redis(celery).ping()
    for client in (state, get_redis(celery)):
        close_with_sentinels(client)
    celery.close()


def close_with_sentinels(client: redis.Redis) -> None:
    client.close()
    for sentinel in client.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        sentinel.close()


def test_no_primary_is_a_connection_error(group: SentinelGroup) -> None:
    settings = load_settings({"redis_sentinels": group.sentinels,
                              "redis_sentinel_master": "no-such-group"}, environ={})
    client = connect_redis(settings)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    close_with_sentinels(client)
