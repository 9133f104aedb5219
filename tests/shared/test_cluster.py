"""The state layer on a real Redis Cluster: three primaries started here, tenants on each.

A Cluster refuses a script whose keys span slots (CROSSSLOT) and a command for a
slot the node does not serve (MOVED, which redis-py follows); so every script
below running to its normal answer, for tenants on every primary, is the proof
that the lease, fence and state scripts are cluster-legal as the product calls
them. The epoch keys (``wa:{_}:...``) live on one primary; the grants on the
other two prove the node identity the keeper carries instead of reading them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from shared import keys
from shared.clock import ManualClock
from shared.lease import LeaseKeeper
from shared.state import SessionStore
from shared.state_machine import WriteResult
from tests.support.cluster_proc import SLOTS, RedisClusterProcesses
from workers.cleanup import sweep
from workers.recovery import RecoveryRecord, restore_tenants

PRIMARIES = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    servers = RedisClusterProcesses(PRIMARIES).start()
    client = servers.client()
    client.set(keys.BOOT_MARKER, "1")  # a fresh Cluster of ours: no lease can exist yet
    try:
        yield client
    finally:
        client.close()
        servers.cleanup()


def node_of(tenant: str) -> int:
    return min(key_slot(keys.lease(tenant).encode()) // (SLOTS // PRIMARIES), PRIMARIES - 1)


@pytest.fixture
def tenants() -> list[str]:
    """Two fresh tenants on each primary."""
    run = uuid.uuid4().hex[:6]
    chosen: dict[int, list[str]] = {i: [] for i in range(PRIMARIES)}
    n = 0
    while any(len(v) < 2 for v in chosen.values()):
        tenant = f"c{run}-{n}"
        n += 1
        if len(chosen[node_of(tenant)]) < 2:
            chosen[node_of(tenant)].append(tenant)
    return [t for ts in chosen.values() for t in ts]


def test_leases_are_granted_renewed_fenced_and_released_on_every_primary(
        cluster: RedisCluster, tenants: list[str]) -> None:
    clock = ManualClock()
    a, b = LeaseKeeper(cluster, "wa", 15, clock=clock), LeaseKeeper(cluster, "wb", 15, clock=clock)
    first = {t: a.acquire(t).lease for t in tenants}
    assert all(first.values()), first
    assert {node_of(t) for t in tenants} == set(range(PRIMARIES))
    held = {t: b.acquire(t) for t in tenants}
    assert all(r.lease is None and r.holder == "wa" for r in held.values())
    assert a.renew_all() == [], "one batch across the three primaries"
    for t in tenants:
        assert a.release(t) == 1
        second = b.acquire(t).lease
        assert second is not None and second.fence == first[t].fence + 1  # type: ignore[union-attr]


def test_a_registered_worker_waits_for_a_node_it_has_not_seen_to_settle(
        cluster: RedisCluster, tenants: list[str]) -> None:
    """A node identity first seen while workers are registered may have granted to
    them before (a restart, a promotion): its grants wait one freeze, per node."""
    cluster.delete(keys.NODES, keys.LEASE_GRACE)  # as on a Cluster's first start
    clock = ManualClock(wall=time.time())
    w = LeaseKeeper(cluster, f"w-{tenants[0]}", 2, clock=clock, loss_window_s=1.0)
    assert w.heartbeat()[0] == 0, "the epoch's own node: the first identity recorded"
    clock.advance(1)
    results = {node_of(t): w.acquire(t) for t in tenants}
    epoch_node = node_of("_")  # keys.BOOT_MARKER's slot is that of the tag "_"
    assert results[epoch_node].lease is not None
    for node, result in results.items():
        if node != epoch_node:
            assert result.in_grace and 0 < result.retry_after_ms <= 2000, (node, result)
    cluster.zrem(keys.WORKERS, w.owner_id)
    cluster.delete(keys.NODES, keys.LEASE_GRACE)


def test_pairing_commands_and_fenced_writes_on_every_primary(
        cluster: RedisCluster, tenants: list[str]) -> None:
    clock = ManualClock(wall=1_700_000_000.0)
    store = SessionStore(cluster, clock)
    leases = LeaseKeeper(cluster, "wa", 15, clock=clock)
    for t in tenants:
        accepted = store.begin_pairing(t, "qr", 60)
        assert accepted.owner == ""
        lease = leases.acquire(t, also=store.take_over_read(t))
        assert lease.lease is not None
        taken = lease.also.taken
        assert taken.command is not None and taken.command.kind == "pair"
        qr = {"value": json.dumps({"code": "2@x", "index": 0}), "ttl_ms": 60000}
        assert store.fenced_write(t, lease.lease.fence, pairing={"status": "qr"},
                                  pairing_id=accepted.command.pairing_id, qr=qr) == WriteResult(1)
        assert store.current_qr(t)["code"] == "2@x"
        assert store.fenced_write(t, lease.lease.fence - 1, session={"state": "idle"}) \
            == WriteResult(0), "an older fence is refused"
        store.ack_command(t, lease.lease.value, taken.command)
        assert store.fenced_write(t, lease.lease.fence, session={
            "state": "connected", "device": "1:1@s.whatsapp.net"},
            pairing={"status": "paired"}) == WriteResult(1)
        status = store.status(t)
        assert status["state"] == "connected" and status["owner"] == "wa"
        assert store.enqueue(t, "reset").owner == "wa"
        assert store.take_command(t, lease.lease.value).command.kind == "reset"  # type: ignore[union-attr]
        assert cluster.xlen(keys.events(t)) >= 4, "the events came in the same scripts"


def test_cleanup_and_restore_on_every_primary(cluster: RedisCluster,
                                              tenants: list[str]) -> None:
    from shared.config import Settings

    clock = ManualClock(wall=1_700_000_000.0)
    store = SessionStore(cluster, clock)
    for t in tenants:
        store.begin_pairing(t, "qr", 10)
    clock.advance(11)  # past every deadline, nobody holds a lease
    report = sweep(cluster, Settings(), clock)
    assert set(tenants) <= set(report.expired)
    assert all(store.status(t)["pairing"]["status"] == "expired" for t in tenants)
    for t in tenants:
        cluster.delete(keys.tenant_record(t), keys.session(t))
    records = [RecoveryRecord(t, f"{t}.example.com", "1", "1:1@s.whatsapp.net", True)
               for t in tenants]
    assert restore_tenants(cluster, records, "1700000100.000") == [1] * len(tenants)
    assert all(cluster.sismember(keys.TENANTS, t) and cluster.sismember(keys.ACTIVE, t)
               for t in tenants)
    assert all(store.status(t)["state"] == "reconnecting" for t in tenants)
