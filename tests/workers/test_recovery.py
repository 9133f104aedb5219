"""Re-seeding a Redis that lost its data from a worker's recovery records."""

from __future__ import annotations

import redis

from shared import keys
from shared.clock import ManualClock
from shared.tenants import TenantRegistry, hash_key
from workers.recovery import RecoveryCache, RecoveryRecord, restore_tenants

JID = "6281:7@s.whatsapp.net"


def _lose(client: redis.Redis, tenant: str, key_hash: str, domain: str) -> None:
    """What an empty restart does to one tenant (the shared test Redis is not flushed)."""
    client.delete(keys.tenant_record(tenant), keys.session(tenant))
    client.srem(keys.TENANTS, tenant)
    client.srem(keys.ACTIVE, tenant)
    client.hdel(keys.KEY_HASHES, key_hash)
    client.hdel(keys.DOMAINS, domain)


def _restore(client: redis.Redis, tenant: str, device: str, live: str = "1",
             domain: str = "") -> int:
    record = RecoveryRecord(tenant, domain, "1700000000.000", device, live == "1")
    return restore_tenants(client, [record], "1700000100.000")[0]


def test_restore_is_idempotent_and_never_overwrites(booted_redis: redis.Redis,
                                                    tenant_id: str) -> None:
    client = booted_redis
    domain = f"{tenant_id}.example.com"
    assert _restore(client, tenant_id, JID, domain=domain) == 1
    record = client.hgetall(keys.tenant_record(tenant_id))
    assert record[b"id"] == tenant_id.encode() and record[b"key_hash"] == b"", "no key"
    assert client.sismember(keys.TENANTS, tenant_id)
    assert client.hget(keys.DOMAINS, domain) == tenant_id.encode()
    assert client.hget(keys.session(tenant_id), "state") == b"reconnecting"
    assert client.hget(keys.session(tenant_id), "device") == JID.encode()
    assert client.sismember(keys.ACTIVE, tenant_id)
    before = {k: client.dump(k) for k in (keys.tenant_record(tenant_id), keys.session(tenant_id))}

    # A second worker with an older record (another device): no change.
    assert _restore(client, tenant_id, "999:1@s.whatsapp.net") == 2, "re-seeded before"
    assert {k: client.dump(k) for k in before} == before


def test_restore_writes_the_indexes_again_when_the_first_try_stopped_after_the_record(
        booted_redis: redis.Redis, tenant_id: str) -> None:
    """The indexes are a second step (a Cluster allows one slot per script): a worker
    that re-seeded the record and then lost Redis leaves them for the next try."""
    client = booted_redis
    domain = f"{tenant_id}.example.com"
    assert _restore(client, tenant_id, JID, domain=domain) == 1
    client.srem(keys.TENANTS, tenant_id)
    client.srem(keys.ACTIVE, tenant_id)
    client.hdel(keys.DOMAINS, domain)
    assert _restore(client, tenant_id, JID, domain=domain) == 2
    assert client.sismember(keys.TENANTS, tenant_id) and client.sismember(keys.ACTIVE, tenant_id)
    assert client.hget(keys.DOMAINS, domain) == tenant_id.encode()


def test_restore_leaves_a_tenant_created_again_alone(booted_redis: redis.Redis,
                                                    tenant_id: str) -> None:
    client = booted_redis
    key = TenantRegistry(client).create(tenant_id)
    assert _restore(client, tenant_id, JID) == 0
    assert client.hget(keys.tenant_record(tenant_id), "key_hash") == hash_key(key).encode()
    assert client.hget(keys.session(tenant_id), "state") == b"idle"


def test_a_tenant_without_a_live_device_comes_back_idle(booted_redis: redis.Redis,
                                                        tenant_id: str) -> None:
    assert _restore(booted_redis, tenant_id, "", live="1") == 1
    assert booted_redis.hget(keys.session(tenant_id), "state") == b"idle"
    assert not booted_redis.sismember(keys.ACTIVE, tenant_id)


def test_the_cache_reseeds_only_when_the_boot_marker_changes(booted_redis: redis.Redis,
                                                             tenant_id: str) -> None:
    client, clock = booted_redis, ManualClock()
    domain = f"{tenant_id}.example.org"
    registry = TenantRegistry(client)
    key = registry.create(tenant_id, domain)
    client.hset(keys.session(tenant_id), mapping={"state": "connected", "device": JID})
    cache = RecoveryCache(client, clock, keep_after_fence_s=60)
    cache.capture([tenant_id])
    assert cache.on_boot_marker("run-a") == 0, "the first value is only remembered"

    _lose(client, tenant_id, hash_key(key), domain)
    assert cache.on_boot_marker("run-a") == 0, "same marker: Redis kept its data"
    assert not registry.exists(tenant_id)
    cache.refresh_some([tenant_id])  # reads nothing: the last good record is kept
    assert cache.on_boot_marker("run-b") == 1
    assert not registry.key_matches(tenant_id, key), "keys are never re-seeded"
    assert registry.describe(tenant_id)["has_key"] is False
    assert registry.tenant_for_domain(domain) == tenant_id
    assert client.hget(keys.session(tenant_id), "state") == b"reconnecting"
    assert cache.on_boot_marker("run-b") == 0

    # A fenced tenant's record is kept for a while, then dropped; held elsewhere, at once.
    cache.fenced(tenant_id)
    clock.advance(59)
    cache.refresh_some([])
    assert len(cache) == 1
    clock.advance(2)
    cache.refresh_some([])
    assert len(cache) == 0
    cache.capture([tenant_id])
    cache.fenced(tenant_id)
    cache.held_elsewhere([tenant_id])
    assert len(cache) == 0


def test_a_key_rotated_or_revoked_before_an_empty_restart_never_comes_back(
        booted_redis: redis.Redis, tenant_id: str) -> None:
    """The worker read the record before the rotation (its refresh is a batch per
    heartbeat); Redis then lost everything, rotation included."""
    client, registry = booted_redis, TenantRegistry(booted_redis)
    original = registry.create(tenant_id)
    client.hset(keys.session(tenant_id), mapping={"state": "connected", "device": JID})
    cache = RecoveryCache(client, ManualClock(), keep_after_fence_s=60)
    cache.capture([tenant_id])
    assert cache.on_boot_marker("run-a") == 0
    registry.revoke(tenant_id)  # or rotate: the leaked key is cut off
    rotated = registry.rotate(tenant_id)
    _lose(client, tenant_id, hash_key(rotated), "")
    assert cache.on_boot_marker("run-b") == 1
    for key in (original, rotated):
        assert not registry.key_matches(tenant_id, key)
        assert client.hget(keys.KEY_HASHES, hash_key(key)) is None
    assert client.hget(keys.session(tenant_id), "state") == b"reconnecting", "device resumes"
    fresh = registry.rotate(tenant_id)
    assert registry.key_matches(tenant_id, fresh) and not registry.key_matches(tenant_id, original)
