"""The per-thread connection pool (shared/redis_pool.py), on a real Redis."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis

from shared import redis_pool
from shared.config import load_settings
from shared.redis_client import connect_redis
from shared.redis_pool import PinnedPool
from tests.support.ports import wait_for


@pytest.fixture
def pinned(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis(connection_pool=PinnedPool.from_url(redis_url))
    yield client
    client.connection_pool.disconnect()


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(10)
    return out[0]


def test_connect_redis_keeps_a_connection_per_thread(redis_url: str) -> None:
    client = connect_redis(load_settings({"redis_url": redis_url}, environ={}))
    assert isinstance(client.connection_pool, PinnedPool)
    assert client.ping()


def test_each_thread_keeps_its_own_connection_even_when_used_in_turns(
        pinned: redis.Redis) -> None:
    # Threads taking turns: a plain pool hands both the one idle connection.
    turn = [threading.Event(), threading.Event()]
    ids: list[list[int]] = [[], []]

    def run(me: int) -> None:
        for _ in range(5):
            turn[me].wait(5)
            turn[me].clear()
            ids[me].append(pinned.client_id())
            turn[1 - me].set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    turn[0].set()
    for t in threads:
        t.join(10)
    assert len(ids[0]) == len(ids[1]) == 5
    assert len(set(ids[0])) == len(set(ids[1])) == 1
    assert ids[0][0] != ids[1][0]


def test_a_nested_call_gets_a_pooled_connection_and_the_kept_one_stays(
        pinned: redis.Redis) -> None:
    pool = pinned.connection_pool
    kept = pinned.client_id()
    outer = pool.get_connection()
    inner = pool.get_connection()  # while this thread's own is busy
    assert outer is not inner
    pool.release(inner)
    pool.release(outer)
    assert pinned.client_id() == kept
    assert pool.pinned_count() == 1  # type: ignore[attr-defined]


def test_a_threads_connection_closes_when_the_thread_ends(pinned: redis.Redis,
                                                           redis_url: str) -> None:
    watcher = redis.Redis.from_url(redis_url)
    theirs = _in_thread(pinned.client_id)

    def gone() -> bool:
        return all(c["id"] != str(theirs) for c in watcher.client_list())

    wait_for(gone, 5, "the ended thread's connection to close")
    watcher.close()


def test_disconnect_closes_kept_connections_and_the_next_call_reconnects(
        pinned: redis.Redis) -> None:
    before = pinned.client_id()
    pinned.connection_pool.disconnect()
    assert pinned.client_id() != before


def test_an_idle_connection_the_server_closed_is_replaced_before_use(
        pinned: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    killer = redis.Redis.from_url(redis_url)
    monkeypatch.setattr(redis_pool, "IDLE_CHECK_S", 0.0)  # every reuse counts as idle
    before = pinned.client_id()
    killer.client_kill_filter(_id=before)
    assert pinned.client_id() != before  # no failed call
    # Without the idle check the first call after the kill fails: the check is what
    # spares it (a busy connection is reused unchecked).
    monkeypatch.setattr(redis_pool, "IDLE_CHECK_S", 3600.0)
    again = pinned.client_id()
    killer.client_kill_filter(_id=again)
    with pytest.raises(redis.ConnectionError):
        pinned.client_id()
    assert pinned.client_id() not in (before, again)
    killer.close()


def test_a_primary_switch_makes_kept_connections_reconnect_at_their_release(
        pinned: redis.Redis) -> None:
    pool = pinned.connection_pool
    before = pinned.client_id()
    other_thread = _in_thread(pinned.client_id)
    pool.disconnect(inuse_connections=False)  # what Sentinel's primary lookup calls
    assert pinned.client_id() == before  # released: now reconnects at its next use
    assert pinned.client_id() != before
    assert _in_thread(pinned.client_id) != other_thread  # a new thread: a new connection


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_uses_the_parents_socket(pinned: redis.Redis) -> None:
    parent = pinned.client_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, str(pinned.client_id()).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = int(os.read(read, 64) or b"0")
    os.close(read)
    assert child and child != parent
    assert pinned.client_id() == parent  # the child left the parent's socket alone
