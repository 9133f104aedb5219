"""Metric helpers keep labels to closed sets; the scrape-time gauges read Redis correctly."""

from __future__ import annotations

import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared import keys, metrics
from shared.metrics_exposition import RedisStateCollector
from shared.state import error_json
from tests.support.ports import free_port


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pairing_outcomes_are_counted_by_reason() -> None:
    before = sample("wapair_pairings_ended_total", outcome="failed", reason="owner_lost")
    metrics.pairing_ended("failed", error_json("owner_lost", "the worker stopped", 1.0))
    assert sample("wapair_pairings_ended_total", outcome="failed",
                  reason="owner_lost") == before + 1
    before = sample("wapair_pairings_ended_total", outcome="cancelled", reason="cancelled")
    metrics.pairing_ended("cancelled", "")
    assert sample("wapair_pairings_ended_total", outcome="cancelled",
                  reason="cancelled") == before + 1
    before = sample("wapair_pairings_ended_total", outcome="succeeded", reason="succeeded")
    metrics.pairing_ended("paired")
    assert sample("wapair_pairings_ended_total", outcome="succeeded",
                  reason="succeeded") == before + 1


def test_labels_stay_in_closed_sets() -> None:
    before = sample("wapair_webhook_deliveries_total", outcome="other")
    metrics.record_webhook_delivery("https://hooks.example.com/secret-path")
    assert sample("wapair_webhook_deliveries_total", outcome="other") == before + 1
    metrics.record_webhook_delivery("delivered")
    assert sample("wapair_webhook_deliveries_total", outcome="delivered") >= 1
    before = sample("wapair_pairings_ended_total", outcome="failed", reason="other")
    metrics.pairing_ended("failed", error_json("Weird Code With Spaces", "x", 1.0))
    assert sample("wapair_pairings_ended_total", outcome="failed", reason="other") == before + 1


def test_a_logout_not_at_connect_is_device_removed() -> None:
    removed = sample("wapair_whatsapp_events_total", event="device_removed")
    at_connect = sample("wapair_whatsapp_events_total", event="logged_out")
    metrics.whatsapp_event("logged_out", {"reason": 401, "on_connect": False})
    metrics.whatsapp_event("logged_out", {"reason": 401, "on_connect": True})
    assert sample("wapair_whatsapp_events_total", event="device_removed") == removed + 1
    assert sample("wapair_whatsapp_events_total", event="logged_out") == at_connect + 1


def test_every_exported_name_is_listed() -> None:
    exported = {f.name for f in REGISTRY.collect() if f.name.startswith("wapair_")}
    assert exported <= metrics.METRIC_NAMES
    assert "wapair_pairings_started" in metrics.METRIC_NAMES


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: redis.Redis, now: float) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisStateCollector(client, now=lambda: now))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_scrape_time_gauges_from_redis(private_redis: redis.Redis) -> None:
    r = private_redis
    layout = {  # tenant: (state, device, leased, mail)
        "a-connected": ("connected", "1@s", True, 0),
        "b-orphan": ("connected", "2@s", False, 0),
        "c-reconnecting": ("reconnecting", "3@s", True, 2),
        "d-failed": ("failed", "4@s", False, 0),
        "e-idle-linked": ("idle", "5@s", False, 0),
        "f-pairing": ("pairing", "", True, 1),
    }
    for tenant, (state, device, leased, mail) in layout.items():
        r.sadd(keys.TENANTS, tenant)
        r.hset(keys.session(tenant), mapping={"state": state, "device": device})
        if leased:
            r.set(keys.lease(tenant), "w1|tok", px=10_000)
        for i in range(mail):
            r.rpush(keys.mailbox(tenant), f"cmd{i}")
    r.zadd(keys.WORKERS, {"w1": 1000.0, "w-stale": 900.0})
    r.rpush("wapair.claims", "kick")

    got = _scrape(r, now=1005.0)
    assert got[("wapair_redis_up", ())] == 1
    assert got[("wapair_workers_alive", ())] == 1
    assert got[("wapair_claims_queue_length", ())] == 1
    assert got[("wapair_tenants", (("state", "connected"),))] == 2
    assert got[("wapair_tenants", (("state", "logged_out"),))] == 0
    # orphaned connected, reconnecting, failed with a device; not the idle (reset) one
    assert got[("wapair_paired_not_connected", ())] == 3
    assert got[("wapair_mailbox_commands", ())] == 3
    assert got[("wapair_mailbox_depth_top", (("tenant", "c-reconnecting"),))] == 2
    assert got[("wapair_mailbox_depth_top", (("tenant", "f-pairing"),))] == 1
    assert ("wapair_mailbox_depth_top", (("tenant", "a-connected"),)) not in got


def test_mailbox_gauge_names_only_the_deepest(private_redis: redis.Redis) -> None:
    for i in range(metrics.MAILBOX_TOP_N + 5):
        tenant = f"deep-{i:02d}"
        private_redis.sadd(keys.TENANTS, tenant)
        private_redis.rpush(keys.mailbox(tenant), *["c"] * (i + 1))
    got = _scrape(private_redis, now=0.0)
    named = [k for k in got if k[0] == "wapair_mailbox_depth_top"]
    assert len(named) == metrics.MAILBOX_TOP_N
    assert ("wapair_mailbox_depth_top", (("tenant", "deep-14"),)) in got


def test_redis_down_is_a_gauge_not_an_error() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    assert _scrape(dead, now=0.0)[("wapair_redis_up", ())] == 0
