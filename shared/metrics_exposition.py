"""What the API's ``GET /metrics`` serves: every process's samples plus gauges read from Redis.

The metric definitions and names are in ``shared/metrics.py``; this module
only exposes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from shared import keys
from shared.codec import text as _text
from shared.metrics import (
    CLAIMS_QUEUE_LENGTH,
    MAILBOX_COMMANDS,
    MAILBOX_DEPTH_TOP,
    MAILBOX_TOP_N,
    PAIRED_NOT_CONNECTED,
    REDIS_UP,
    TENANTS,
    WORKER_FRESH_S,
    WORKERS_ALIVE,
    label_value,
)


class RedisStateCollector:
    """Cluster-wide gauges read from Redis when scraped: one pipelined round trip.

    Costs about four commands per tenant per scrape (state, device, lease,
    mailbox length). Per-tenant queue depth is a top-N gauge (the deepest
    MAILBOX_TOP_N mailboxes that hold anything) plus the total, so the label
    set stays small whatever the number of tenants.
    """

    def __init__(self, client: redis.Redis, claims_queue: str = "wapair.claims",
                 now: Any = None) -> None:
        self._redis = client
        self._claims_queue = claims_queue
        self._now = now

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(REDIS_UP, "1 if the API could read Redis for this scrape")
        try:
            families = list(self._read())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def describe(self) -> list[Metric]:
        return []

    def _read(self) -> Iterator[Metric]:
        now = self._now() if self._now else time.time()
        tenants = sorted(_text(m) for m in self._redis.smembers(keys.TENANTS))
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcount(keys.WORKERS, now - WORKER_FRESH_S, "+inf")
        pipe.llen(self._claims_queue)
        for tenant in tenants:
            pipe.hmget(keys.session(tenant), "state", "device")
            pipe.exists(keys.lease(tenant))
            pipe.llen(keys.mailbox(tenant))
        replies = pipe.execute()
        workers, claims, rest = replies[0], replies[1], replies[2:]
        by_state: dict[str, int] = {}
        not_connected = 0
        depths: list[tuple[int, str]] = []
        for i, tenant in enumerate(tenants):
            (state_raw, device_raw), leased, depth = rest[3 * i: 3 * i + 3]
            state = state_raw.decode() if state_raw else "idle"
            by_state[state] = by_state.get(state, 0) + 1
            if device_raw and (
                state in ("reconnecting", "failed") or (state == "connected" and not leased)
            ):
                not_connected += 1
            if depth:
                depths.append((int(depth), tenant))
        yield _gauge(WORKERS_ALIVE, f"Workers with a heartbeat in the last {WORKER_FRESH_S:g} s",
                     workers)
        yield _gauge(CLAIMS_QUEUE_LENGTH, "Kicks waiting in the shared claims queue", claims)
        states = GaugeMetricFamily(TENANTS, "Tenants by session state", labels=["state"])
        for state in ("idle", "pairing", "connected", "reconnecting", "failed", "logged_out"):
            states.add_metric([state], by_state.pop(state, 0))
        for state, count in sorted(by_state.items()):
            states.add_metric([label_value(state)], count)
        yield states
        yield _gauge(PAIRED_NOT_CONNECTED,
                     "Tenants with a linked device that are reconnecting, failed, or "
                     "connected without an owner", not_connected)
        yield _gauge(MAILBOX_COMMANDS, "Commands waiting in all tenant mailboxes",
                     sum(d for d, _ in depths))
        top = GaugeMetricFamily(MAILBOX_DEPTH_TOP,
                                f"Commands waiting, for the {MAILBOX_TOP_N} deepest mailboxes",
                                labels=["tenant"])
        for depth, tenant in sorted(depths, key=lambda x: (-x[0], x[1]))[:MAILBOX_TOP_N]:
            top.add_metric([tenant], depth)
        yield top


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _ProcessRegistry:
    """This process's own metrics, for a registry that also holds other collectors."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()

    def describe(self) -> list[Metric]:
        return []


def render(client: redis.Redis | None) -> tuple[bytes, str]:
    """The API's /metrics body: every process's samples (multiprocess mode) plus Redis gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    if client is not None:
        registry.register(RedisStateCollector(client))
    return generate_latest(registry), CONTENT_TYPE_LATEST
