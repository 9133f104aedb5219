"""The tenant lease: grants, fences, batched renewal, self-fencing, the restart grace."""

from __future__ import annotations

import redis

from shared import keys
from shared.clock import ManualClock
from shared.lease import LeaseKeeper
from shared.state import SessionStore
from tests.support.redis_proc import RedisProcess


def keeper(client: redis.Redis, owner: str, clock: ManualClock, ttl: float = 15) -> LeaseKeeper:
    return LeaseKeeper(client, owner, ttl, clock=clock)


def test_one_holder_at_a_time_and_each_grant_gets_a_newer_fence(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    clock = ManualClock()
    a, b = keeper(booted_redis, "wa", clock), keeper(booted_redis, "wb", clock)
    first = a.acquire(tenant_id)
    assert first.lease is not None
    refused = b.acquire(tenant_id)
    assert refused.lease is None and refused.holder == "wa" and refused.retry_after_ms > 0
    assert a.release(tenant_id) == 1
    second = b.acquire(tenant_id)
    assert second.lease is not None and second.lease.fence == first.lease.fence + 1


def test_reacquire_by_the_holder_keeps_its_fence(booted_redis: redis.Redis, tenant_id: str) -> None:
    a = keeper(booted_redis, "wa", ManualClock())
    first, again = a.acquire(tenant_id), a.acquire(tenant_id)
    assert first.lease and again.lease and again.lease.fence == first.lease.fence


class CountingConnection(redis.Connection):
    """A redis-py connection that counts the requests it writes (round trips)."""

    writes = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


def test_renew_all_is_one_round_trip_for_many_leases(
    booted_redis: redis.Redis, redis_url: str, tenant_id: str
) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    a = keeper(client, "wa", ManualClock())
    for i in range(200):
        assert a.acquire(f"{tenant_id}-{i}").lease
    a.renew_all()  # the first batch may load the script (NOSCRIPT retry); measure the next
    before = CountingConnection.writes
    assert a.renew_all() == []
    assert CountingConnection.writes - before == 1
    client.close()


def test_a_new_owner_reads_what_it_takes_over_in_the_grants_round_trip(
    booted_redis: redis.Redis, redis_url: str, tenant_id: str,
) -> None:
    """acquire(also=take_over_read): one round trip grants the lease and takes the first
    command with the state it runs on; refused, the same reads take nothing."""
    tenant, other = tenant_id, f"{tenant_id}-b"
    SessionStore(booted_redis).begin_pairing(tenant, "qr", 60)
    SessionStore(booted_redis).begin_pairing(other, "qr", 60)
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    a, store = keeper(client, "wa", ManualClock()), SessionStore(client)
    a.acquire(f"{tenant}-warm", also=store.take_over_read(f"{tenant}-warm"))  # loads scripts
    before = CountingConnection.writes
    reads = store.take_over_read(tenant)
    granted = a.acquire(tenant, also=reads)
    assert CountingConnection.writes - before == 1
    assert granted.lease is not None
    seen = reads.parse(granted.also)
    assert seen.state[0]["state"] == "pairing" and seen.state[1]["status"] == "queued"
    assert seen.record == {}  # no tenant record was created for this test tenant
    assert seen.taken.command is not None and seen.taken.command.kind == "pair"
    assert booted_redis.llen(keys.inflight(tenant)) == 1, "taken, not run yet"
    booted_redis.set(keys.lease(other), "wb|x", px=15000)
    reads = store.take_over_read(other)
    refused = a.acquire(other, also=reads)
    assert refused.lease is None and refused.holder == "wb"
    assert reads.parse(refused.also).taken.command is None, "not the owner: nothing taken"
    assert booted_redis.llen(keys.mailbox(other)) == 1
    client.close()


def test_renewal_reports_a_lease_taken_by_someone_else(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    a = keeper(booted_redis, "wa", ManualClock())
    assert a.acquire(tenant_id).lease
    booted_redis.set(keys.lease(tenant_id), "intruder|x", px=15000)
    lost = a.renew_all()
    assert [x.tenant for x in lost] == [tenant_id]
    assert a.get(tenant_id) is None


def test_self_fences_before_the_ttl_when_renewals_stop(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    clock = ManualClock()
    a = keeper(booted_redis, "wa", clock, ttl=15)
    lease = a.acquire(tenant_id).lease
    assert lease is not None and a.is_valid(tenant_id, lease.fence)
    clock.advance(11.9)  # margin is ttl/5 = 3 s
    assert a.expired() == [] and a.is_valid(tenant_id)
    clock.advance(0.2)
    assert [x.tenant for x in a.expired()] == [tenant_id]
    assert not a.is_valid(tenant_id)


def test_successful_renewal_moves_the_local_deadline(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    clock = ManualClock()
    a = keeper(booted_redis, "wa", clock, ttl=15)
    assert a.acquire(tenant_id).lease
    clock.advance(10)
    assert a.renew_all() == []
    clock.advance(10)  # 20 s after the grant, 10 s after the renewal
    assert a.expired() == [] and a.is_valid(tenant_id)


def test_release_keeps_the_lease_while_commands_wait(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    a = keeper(booted_redis, "wa", ManualClock())
    assert a.acquire(tenant_id).lease
    booted_redis.rpush(keys.mailbox(tenant_id), "{}")
    assert a.release(tenant_id) == -1
    assert a.get(tenant_id) is not None
    assert a.release(tenant_id, force=True) == 1
    assert not booted_redis.exists(keys.lease(tenant_id))


def test_a_redis_that_lost_its_data_grants_nothing_for_one_ttl(tenant_id: str) -> None:
    server = RedisProcess().start()
    try:
        client = redis.Redis.from_url(server.url)
        a = keeper(client, "wa", ManualClock(), ttl=1)
        held = a.acquire(tenant_id)
        assert held.lease is None and held.in_grace and 0 < held.retry_after_ms <= 1000
        assert not client.exists(keys.lease(tenant_id))
        # once the grace key has expired (Redis' own clock), grants resume
        client.pexpire(keys.LEASE_GRACE, 1)
        client.delete(keys.LEASE_GRACE)
        assert a.acquire(tenant_id).lease is not None
        # restart empty: the boot marker is gone, so the grace starts again
        server.stop()
        server.start()
        client = redis.Redis.from_url(server.url)
        b = keeper(client, "wb", ManualClock(), ttl=1)
        assert b.acquire(tenant_id).in_grace
        client.close()
    finally:
        server.cleanup()


def test_a_redis_restart_that_kept_its_data_still_freezes_grants_for_one_ttl(
    tenant_id: str,
) -> None:
    """AOF everysec can lose the last second (a grant among it); the run_id tells a restart."""
    server = RedisProcess(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set(keys.BOOT_MARKER, "1")
        a = keeper(client, "wa", ManualClock(), ttl=15)
        assert a.acquire(tenant_id).lease is not None
        client.close()
        server.stop()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.exists(keys.lease(tenant_id)), "the AOF kept the lease"
        b = keeper(client, "wb", ManualClock(), ttl=15)
        # A worker's heartbeat notices the restart first: the freeze runs from it.
        assert 0 < b.note_restart() <= 15000
        refused = b.acquire(f"{tenant_id}-other")
        assert refused.in_grace and 0 < refused.retry_after_ms <= 15000
        assert a.renew_all() == [], "a holder whose lease survived keeps it"
        client.close()
    finally:
        server.cleanup()
