"""The tenant lease: grants, fences, batched renewal, self-fencing, the restart grace."""

from __future__ import annotations

import time

import redis

from shared import keys
from shared.clock import ManualClock
from shared.lease import LeaseKeeper
from shared.scripts import scripts_for
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
    seen = granted.also
    assert seen.state[0]["state"] == "pairing" and seen.state[1]["status"] == "queued"
    assert seen.record == {}  # no tenant record was created for this test tenant
    assert seen.taken.command is not None and seen.taken.command.kind == "pair"
    assert booted_redis.llen(keys.inflight(tenant)) == 1, "taken, not run yet"
    booted_redis.set(keys.lease(other), "wb|x", px=15000)
    reads = store.take_over_read(other)
    refused = a.acquire(other, also=reads)
    assert refused.lease is None and refused.holder == "wb"
    assert refused.also.taken.command is None, "not the owner: nothing taken"
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
        # once the freeze is over, grants resume (ended here by forgetting it)
        client.delete(keys.LEASE_GRACE, keys.NODES)
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


def worker_keeper(client: redis.Redis, owner: str, clock: ManualClock, ttl: float = 15,
                  loss_window_s: float = 2.0) -> LeaseKeeper:
    """A keeper as a worker has it: windows only after a durable heartbeat."""
    return LeaseKeeper(client, owner, ttl, clock=clock, loss_window_s=loss_window_s)


def restarted(server: RedisProcess, client: redis.Redis) -> redis.Redis:
    client.close()
    server.stop()
    server.start()
    return redis.Redis.from_url(server.url)


def test_a_redis_restart_that_kept_its_data_freezes_grants_while_a_worker_may_hold_one(
    tenant_id: str,
) -> None:
    """AOF everysec can lose the last second (a grant among it); the run_id tells a restart."""
    server = RedisProcess(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set(keys.BOOT_MARKER, "1")
        clock = ManualClock(wall=time.time())
        a = worker_keeper(client, "wa", clock)
        assert a.heartbeat()[0] == 0
        clock.advance(2)
        assert a.acquire(tenant_id).lease is not None
        client = restarted(server, client)
        a._redis = client  # the same worker, reconnected
        a._scripts = scripts_for(client)
        assert client.exists(keys.lease(tenant_id)), "the AOF kept the lease"
        b = worker_keeper(client, "wb", ManualClock(wall=time.time()))
        # wa's heartbeat is a second old: the restart rule (one TTL) is the shorter.
        grace = b.heartbeat()[0]
        assert 13000 < grace <= 15000
        b.clock.advance(2)  # b is durably registered now, and still frozen
        refused = b.acquire(f"{tenant_id}-other")
        assert refused.in_grace and refused.retry_after_ms > 10000
        assert a.renew_all() == [], "a holder whose lease survived keeps it"
        client.close()
    finally:
        server.cleanup()


def test_the_freeze_ends_one_ttl_and_the_slack_after_the_last_heartbeat_on_record() -> None:
    server = RedisProcess(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set(keys.BOOT_MARKER, "1")
        clock = ManualClock(wall=time.time())
        probe = worker_keeper(client, "probe", clock, ttl=3)
        probe.check_epoch()  # records this Redis' run_id
        # A worker last heard of 9 s ago: its windows end by then + slack (7 s) + TTL (3 s).
        client.zadd(keys.WORKERS, {"w-silent": time.time() - 9})
        client = restarted(server, client)
        fresh = worker_keeper(client, "w-new", clock, ttl=3)
        assert probe.slack_ms == 7000
        grace = fresh.heartbeat()[0]
        assert 700 <= grace <= 1100, grace
        assert client.pttl(keys.LEASE_GRACE) <= 1100
        client.close()
    finally:
        server.cleanup()


def test_a_restart_after_every_worker_stopped_cleanly_grants_at_once(tenant_id: str) -> None:
    """make run stopped and started again: the workers deregistered, nothing can be held."""
    server = RedisProcess(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set(keys.BOOT_MARKER, "1")
        clock = ManualClock(wall=time.time())
        a = worker_keeper(client, "wa", clock)
        a.heartbeat()
        clock.advance(2)
        assert a.acquire(tenant_id).lease is not None
        assert a.release(tenant_id, force=True) == 1
        client.zrem(keys.WORKERS, "wa")  # what SessionHost.shutdown does
        client = restarted(server, client)
        b = worker_keeper(client, "wb", clock)
        assert b.heartbeat()[0] == 0
        clock.advance(2)
        assert b.acquire(tenant_id).lease is not None
        client.close()
    finally:
        server.cleanup()


def test_a_restart_never_cuts_short_a_freeze_still_running() -> None:
    server = RedisProcess(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        clock = ManualClock(wall=time.time())
        a = worker_keeper(client, "wa", clock)
        assert a.check_epoch()[0] > 0  # no boot marker: data lost, the registry with it
        client.set(keys.LEASE_GRACE, "1", px=8000)
        client = restarted(server, client)
        b = worker_keeper(client, "wb", clock)
        assert 6000 < b.heartbeat()[0] <= 8000, "the empty registry does not end it"
        client.close()
    finally:
        server.cleanup()


def test_a_worker_takes_and_renews_leases_only_after_a_durable_recent_heartbeat(
    booted_redis: redis.Redis, tenant_id: str
) -> None:
    clock = ManualClock(wall=time.time())
    a = worker_keeper(booted_redis, f"w-{tenant_id}", clock)
    unregistered = a.acquire(tenant_id)
    assert unregistered.in_grace and unregistered.lease is None
    a.heartbeat()
    young = a.acquire(tenant_id)
    assert young.in_grace and young.retry_after_ms == 2001, "not yet past the loss window"
    clock.advance(2)
    granted = a.acquire(tenant_id).lease
    assert granted is not None
    deadline = granted.deadline
    clock.advance(a.heartbeat_max_age_s - 2 + 0.1)  # no heartbeat since
    assert a.renew_all() == []
    assert a.get(tenant_id) is granted and granted.deadline == deadline, "not extended"
    clock.advance(deadline - a.margin_s - clock.monotonic())
    assert a.expired() == [granted], "so it fences on time"
    assert booted_redis.pttl(keys.lease(tenant_id)) <= 15000, "the refused renewal was not sent"
    booted_redis.zrem(keys.WORKERS, f"w-{tenant_id}")


def test_a_grant_after_a_flushall_is_not_used(tenant_id: str) -> None:
    """A data loss without a restart keeps the node's identity: the boot marker read
    right after the grant catches it, the grant is given back and the freeze starts."""
    server = RedisProcess().start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set(keys.BOOT_MARKER, "1")
        a, b = keeper(client, "wa", ManualClock()), keeper(client, "wb", ManualClock())
        assert a.acquire(tenant_id).lease is not None
        b.check_epoch()  # b knows the epoch: its next grant carries a settled identity
        client.flushall()  # wa still runs its session
        refused = b.acquire(tenant_id)
        assert refused.lease is None and refused.in_grace and refused.retry_after_ms > 10000
        assert not client.exists(keys.lease(tenant_id)), "the unused grant was given back"
        assert b.acquire(tenant_id).in_grace, "and nothing is granted during the freeze"
        client.close()
    finally:
        server.cleanup()


def _replicate(replica: redis.Redis, primary: RedisProcess | None) -> None:
    if primary is None:
        replica.execute_command("REPLICAOF", "NO", "ONE")
        return
    replica.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
    deadline = time.monotonic() + 10
    while replica.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)


def test_a_promotion_back_to_a_primary_that_never_restarted_freezes_grants(
        tenant_id: str) -> None:
    """A manual failover and back: the old primary keeps its run_id, but its data came
    from the other one (whose last writes it may lack), so its new replication id makes
    it a new node identity that must settle first."""
    one, two = RedisProcess().start(), RedisProcess().start()
    try:
        c1, c2 = redis.Redis.from_url(one.url), redis.Redis.from_url(two.url)
        for c in (c1, c2):
            c.config_set("repl-diskless-sync-delay", 0)  # a full sync at once, not after 5 s
        c1.set(keys.BOOT_MARKER, "1")
        _replicate(c2, one)
        while c2.info("server")["uptime_in_seconds"] < 2:  # a replica up for a while: its
            time.sleep(0.05)  # uptime must not shorten the freeze (it did, by up to a TTL)
        clock = ManualClock(wall=time.time())
        a = worker_keeper(c1, "wa", clock, ttl=3)
        assert a.heartbeat()[0] == 0
        clock.advance(2)
        assert a.acquire(tenant_id).lease is not None
        for promoted, demoted, primary in ((c2, c1, two), (c1, c2, one)):
            _replicate(promoted, None)
            _replicate(demoted, primary)
            a._redis = promoted  # the worker follows the primary, as Sentinel makes it
            a._scripts = scripts_for(promoted)
            a.heartbeat()
            clock.advance(2)
            refused = a.acquire(f"{tenant_id}-{primary.port}")
            assert refused.in_grace and 2000 < refused.retry_after_ms <= 3000, refused
            promoted.delete(keys.LEASE_GRACE, keys.NODES)  # end the freeze: no waiting here
            a.heartbeat()
            # The replica must hold that heartbeat's record of this node before it is
            # promoted next: with none (a lagging stream, on a loaded machine), its
            # identity would be the first under the marker, which has no freeze.
            assert promoted.execute_command("WAIT", 1, 5000) == 1
        c1.close()
        c2.close()
    finally:
        one.cleanup()
        two.cleanup()
