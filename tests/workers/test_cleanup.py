"""Beat's cleanup sweep on a private Redis: what it repairs, and what it never touches."""

from __future__ import annotations

import json

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.state import SessionStore
from shared.taskqueue import worker_queue
from workers.cleanup import dead_after_s, sweep

SETTINGS = load_settings({"lease_ttl_s": 3}, environ={})


@pytest.fixture
def client(private_redis: redis.Redis) -> redis.Redis:
    return private_redis


def _tenant(client: redis.Redis, tenant: str, **session: str) -> None:
    client.sadd(keys.TENANTS, tenant)
    client.hset(keys.tenant_record(tenant), "id", tenant)
    client.hset(keys.session(tenant), mapping=session or {"state": "idle"})


def test_sweep_expires_orphaned_pairings_and_repairs_the_hints(client: redis.Redis) -> None:
    clock = ManualClock()
    store = SessionStore(client, clock)
    for tenant in ("stuck", "owned", "young"):
        _tenant(client, tenant)
        store.begin_pairing(tenant, "qr", 30 if tenant != "young" else 300)
    client.set(keys.lease("owned"), "w1|x", px=60_000)
    client.set(keys.qr("stuck"), "{}", px=60_000)
    _tenant(client, "stale-qr")
    client.set(keys.qr("stale-qr"), "{}", px=60_000)
    _tenant(client, "orphan", state="connected", device="6281:1@s.whatsapp.net")
    _tenant(client, "idle-hint")
    client.sadd(keys.ACTIVE, "idle-hint")
    fence = int(client.get(keys.fence("stuck")) or 0)
    clock.advance(31)

    report = sweep(client, SETTINGS, clock)

    assert report.expired == ["stuck"]
    st = store.status("stuck")
    assert st["state"] == "idle" and st["pairing"]["status"] == "expired"
    assert st["last_error"]["code"] == "pairing_expired"
    assert not client.exists(keys.qr("stuck"))
    assert int(client.get(keys.fence("stuck"))) == fence + 1, "a late owner write is refused"
    assert store.status("owned")["state"] == "pairing", "an owned tenant is its owner's"
    assert store.status("young")["state"] == "pairing"
    assert report.qr_trimmed == ["stale-qr"]
    assert report.reactivated == ["orphan"] and client.sismember(keys.ACTIVE, "orphan")
    assert "idle-hint" in report.deactivated and not client.sismember(keys.ACTIVE, "idle-hint")
    # A queued pair command for the expired pairing is stale for any later owner.
    assert json.loads(client.lindex(keys.mailbox("stuck"), 0))["kind"] == "pair"
    assert client.sismember(keys.ACTIVE, "stuck"), "mail waits: it still wants an owner"

    again = sweep(client, SETTINGS, clock)
    assert not any(vars(again).values()), "a second sweep finds nothing to do"


def test_sweep_deletes_the_kick_queue_of_a_long_dead_worker_only(client: redis.Redis) -> None:
    clock = ManualClock()
    now = clock.time()
    client.zadd(keys.WORKERS, {"dead@h": now - dead_after_s(SETTINGS) - 1, "live@h": now - 5})
    for worker in ("dead@h", "live@h"):
        name = worker_queue(worker).name
        client.rpush(name, "{}")
        client.sadd(f"_kombu.binding.{name}", "x")
    report = sweep(client, SETTINGS, clock)
    assert report.dead_workers == ["dead@h"]
    assert not client.exists("wapair.w.dead@h", "_kombu.binding.wapair.w.dead@h")
    assert client.exists("wapair.w.live@h") and client.exists("_kombu.binding.wapair.w.live@h")
    assert client.zscore(keys.WORKERS, "dead@h") is None
