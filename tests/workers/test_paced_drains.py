"""Pacing holds no drain thread: a paced send waits off the pool, and other tenants'
commands run meanwhile. Real Redis, a scripted client, a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.state import Command
from tests.support.ports import wait_for
from tests.workers.scripted_backend import ScriptedBackend
from tests.workers.test_messaging import accept, connected, record, wait_status
from workers.session_host import SessionHost

#: 0.1 a second: gaps of 5 to 15 s on the hand-moved clock, which only the test moves.
RATE = 0.1


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def host(booted_redis: redis.Redis, redis_url: str, backend: ScriptedBackend,
         clock: ManualClock) -> Iterator[SessionHost]:
    settings = load_settings({"redis_url": redis_url, "lease_ttl_s": 15,
                              "redis_loss_window_s": 0, "send_rate_per_tenant": RATE},
                             environ={})
    client = redis.Redis.from_url(redis_url)
    # Two drain threads for three tenants: a paced send that slept on its drain would
    # leave the third tenant nothing to run on.
    h = SessionHost(client, settings, backend, "w-paced", clock=clock,
                    send_kick=lambda t, o, n: None, max_threads=2)
    assert h.register()
    yield h
    h.shutdown(1)
    client.close()


@pytest.fixture
def tenants(booted_redis: redis.Redis, tenant_id: str) -> Iterator[list[str]]:
    ids = [f"{tenant_id}-{n}" for n in "abc"]
    yield ids
    for tenant in ids:
        booted_redis.srem(keys.ACTIVE, tenant)
        for key in booted_redis.scan_iter(f"wa:{{{tenant}}}:*"):
            booted_redis.delete(key)


def test_paced_sends_hold_no_drain_and_go_when_their_gap_has_passed(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend,
    clock: ManualClock, tenants: list[str],
) -> None:
    busy, other = tenants[:2], tenants[2]
    sessions = {t: connected(host, booted_redis, backend, t) for t in tenants}
    for tenant, session in sessions.items():
        session.answer = lambda chat, content, t=tenant: f"WA-{t}-{content['text']}"
    backlog = {t: [accept(booted_redis, t, f"m{n}") for n in range(2)] for t in busy}
    for tenant in busy:
        host.kick(tenant)
    for tenant in busy:  # the first send of each goes at once; the second waits its gap
        wait_status(booted_redis, tenant, backlog[tenant][0], "sent")
    wait_for(host.drains.idle, 5, "both drains to give their threads back")

    # The third tenant's send runs now, on a pool whose two threads would otherwise
    # both be asleep in a 5-15 s gap.
    first = accept(booted_redis, other, "now")
    host.kick(other)
    wait_status(booted_redis, other, first, "sent")
    assert [record(booted_redis, t, backlog[t][1])["status"] for t in busy] == [
        "queued", "queued"]
    assert host.drains.run_due() == 0  # nothing is due before the gap has passed

    clock.advance(15.0)  # past the longest jittered gap
    assert host.drains.run_due() == 2
    for tenant in busy:
        wait_status(booted_redis, tenant, backlog[tenant][1], "sent")
        assert [c["text"] for _, c in sessions[tenant].sent] == ["m0", "m1"]  # in order


def test_a_reset_behind_a_paced_send_keeps_its_place(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend,
    clock: ManualClock, tenants: list[str],
) -> None:
    """Pacing delays a send by seconds, not hours (a ban): commands keep their order."""
    tenant = tenants[0]
    session = connected(host, booted_redis, backend, tenant)
    session.answer = lambda chat, content: f"WA-{content['text']}"
    ids = [accept(booted_redis, tenant, f"m{n}") for n in range(2)]
    reset = Command(id="r1", kind="reset", tenant=tenant, at=clock.time())
    booted_redis.rpush(keys.mailbox(tenant), reset.to_json())
    host.kick(tenant)
    wait_status(booted_redis, tenant, ids[0], "sent")
    wait_for(host.drains.idle, 5, "the drain to give its thread back")
    assert record(booted_redis, tenant, ids[1])["status"] == "queued"
    assert booted_redis.llen(keys.mailbox(tenant)) == 1  # the reset still waits its turn
    clock.advance(15.0)
    host.drains.run_due()
    wait_status(booted_redis, tenant, ids[1], "sent")
    wait_for(lambda: booted_redis.llen(keys.mailbox(tenant)) == 0, 5, "the reset to run")
