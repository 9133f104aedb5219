"""Fixtures shared by every test: a private Redis, a client on it, unique tenant ids."""

from __future__ import annotations

import gc
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator

import pytest
import redis

from shared import keys
from tests.support.redis_proc import RedisProcess

with warnings.catch_warnings():
    # neonize's import runs os.popen("uname -a") twice without closing it; the
    # abandoned processes are reaped (and warned about) at some later, unrelated
    # subprocess call, so reap them here, inside the filter.
    warnings.filterwarnings("ignore", category=ResourceWarning)
    import neonize.client  # noqa: F401

    for abandoned in list(getattr(subprocess, "_active", None) or []):
        abandoned.wait(timeout=10)
    getattr(subprocess, "_cleanup", lambda: None)()
    gc.collect()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if the environment names one, else a redis-server the tests start."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def booted_redis(redis_client: redis.Redis) -> redis.Redis:
    """A Redis that has not lost data: leases may be granted at once (see test_lease for why)."""
    redis_client.set(keys.BOOT_MARKER, "1")
    return redis_client


@pytest.fixture
def tenant_id() -> str:
    """A fresh tenant id, so tests never share state even on a shared REDIS_URL."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_redis() -> Iterator[redis.Redis]:
    """A Redis server of this test's own, for code that walks every tenant or key it finds.

    Started even when REDIS_URL names a shared server, since such a sweep would
    see (and count) everyone else's data there.
    """
    server = RedisProcess().start()
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()
    server.cleanup()

