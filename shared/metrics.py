"""Every Prometheus metric wapair exports, and the small calls that record them.

Definitions live here and nowhere else; the code calls the helpers below at
the points of interest, and the dashboards and alert rules in ``deploy/`` may
use only the names in :data:`METRIC_NAMES` (a test checks it).

Two ways out:

- the API serves ``GET /metrics`` (``api/metrics.py``). Under gunicorn every
  worker process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` and the
  endpoint aggregates them; without that variable (one process) it serves this
  process's registry. It also adds :class:`RedisStateCollector`: cluster-wide
  gauges computed from Redis at scrape time (same value from every replica, so
  dashboards take ``max``).
- each Celery worker serves its own registry on ``WORKER_METRICS_PORT``
  (:func:`start_worker_exporter`); a worker is one process (threads pool).

Labels are closed sets (reasons are our own error codes, routes are URL rules),
never tenant ids, except the top-N mailbox gauge computed at scrape.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from shared import keys

# --- pairings ---------------------------------------------------------------
PAIRINGS_STARTED = Counter(
    "wapair_pairings_started", "Pairings the API accepted, by method", ["method"]
)
PAIRINGS_ENDED = Counter(
    "wapair_pairings_ended",
    "Pairings that ended, by outcome (succeeded, expired, failed, cancelled) and reason "
    "(the last_error code, or the outcome)",
    ["outcome", "reason"],
)
FIRST_QR_SECONDS = Histogram(
    "wapair_pairing_first_qr_seconds",
    "From the API accepting a pairing to its first QR code in Redis",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
)
CONNECTED_SECONDS = Histogram(
    "wapair_pairing_connected_seconds",
    "From the API accepting a pairing to Connected (after the 515 reconnect)",
    buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180),
)

# --- sessions and leases (workers) -------------------------------------------
OWNED_TENANTS = Gauge(
    "wapair_owned_tenants", "Tenants whose lease this worker holds", multiprocess_mode="livesum"
)
LIVE_SESSIONS = Gauge(
    "wapair_live_sessions",
    "WhatsApp clients open on this worker, by mode (pair, resume)",
    ["mode"],
    multiprocess_mode="livesum",
)
LEASE_RENEW_SECONDS = Histogram(
    "wapair_lease_renew_seconds",
    "Round trip of one batched renewal of all of a worker's leases",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LEASE_RENEW_FAILURES = Counter(
    "wapair_lease_renew_failures",
    "Lease renewals that failed: redis_error (a whole batch) or lost (one lease not ours)",
    ["reason"],
)
SELF_FENCES = Counter(
    "wapair_self_fences", "Sessions a worker dropped itself because its lease was or could be lost"
)
RECONNECTS = Counter(
    "wapair_reconnects",
    "Connected sessions that dropped and reconnect (dropped) or that a new owner resumed "
    "(resumed)",
    ["kind"],
)
WHATSAPP_EVENTS = Counter(
    "wapair_whatsapp_events",
    "Final and conflict events WhatsApp reported: stream_replaced, device_removed, logged_out, "
    "temporary_ban, client_outdated, connect_failure, keepalive_timeout",
    ["event"],
)

# --- API ----------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "wapair_http_requests",
    "API requests by route (the URL rule, never the raw path), method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "wapair_http_request_seconds", "API request duration by route", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
WEBHOOK_DELIVERIES = Counter(
    "wapair_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, gave_up, dropped)",
    ["outcome"],
)

# --- computed from Redis at scrape time (RedisStateCollector) -----------------
WORKERS_ALIVE = "wapair_workers_alive"
TENANTS = "wapair_tenants"
PAIRED_NOT_CONNECTED = "wapair_paired_not_connected"
MAILBOX_COMMANDS = "wapair_mailbox_commands"
MAILBOX_DEPTH_TOP = "wapair_mailbox_depth_top"
CLAIMS_QUEUE_LENGTH = "wapair_claims_queue_length"
REDIS_UP = "wapair_redis_up"

#: Every metric name wapair exports (without the _total/_bucket/... suffixes).
METRIC_NAMES = frozenset(
    {
        m._name  # prometheus_client keeps the name without _total here
        for m in (
            PAIRINGS_STARTED, PAIRINGS_ENDED, FIRST_QR_SECONDS, CONNECTED_SECONDS,
            OWNED_TENANTS, LIVE_SESSIONS, LEASE_RENEW_SECONDS, LEASE_RENEW_FAILURES,
            SELF_FENCES, RECONNECTS, WHATSAPP_EVENTS, HTTP_REQUESTS, HTTP_SECONDS,
            WEBHOOK_DELIVERIES,
        )
    }
    | {WORKERS_ALIVE, TENANTS, PAIRED_NOT_CONNECTED, MAILBOX_COMMANDS, MAILBOX_DEPTH_TOP,
       CLAIMS_QUEUE_LENGTH, REDIS_UP}
)

WEBHOOK_OUTCOMES = frozenset({"delivered", "retry", "gave_up", "dropped"})
_OUTCOMES = {"paired": "succeeded", "expired": "expired", "failed": "failed",
             "cancelled": "cancelled"}
_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: How many tenants the mailbox gauge names (the deepest ones); the rest are summed.
MAILBOX_TOP_N = 10
WORKER_FRESH_S = 10.0


def _label(value: object) -> str:
    """A label value from a closed vocabulary; anything else becomes 'other'."""
    text = str(value)
    return text if _LABEL.fullmatch(text) else "other"


# --- recording helpers (small calls at the points of interest) ----------------
def pairing_started(method: str) -> None:
    """The API accepted a pairing."""
    PAIRINGS_STARTED.labels(_label(method)).inc()


def pairing_ended(status: str, error: str = "") -> None:
    """A pairing ended with ``status`` (paired, expired, failed, cancelled) and its last_error."""
    outcome = _OUTCOMES.get(status, "other")
    reason = outcome
    if error:
        try:
            reason = str(json.loads(error).get("code") or outcome)
        except (ValueError, AttributeError):
            reason = "other"
    PAIRINGS_ENDED.labels(outcome, _label(reason)).inc()


def observe_pairing_step(step: str, started_at: float | None, now: float) -> None:
    """Seconds from the API accepting the pairing to its first QR (``qr``) or ``connected``."""
    if started_at is None:
        return
    histogram = FIRST_QR_SECONDS if step == "qr" else CONNECTED_SECONDS
    histogram.observe(max(0.0, now - started_at))


def set_sessions(owned: int, live_pair: int, live_resume: int) -> None:
    """This worker's owned tenants and open clients (set every maintenance round)."""
    OWNED_TENANTS.set(owned)
    LIVE_SESSIONS.labels("pair").set(live_pair)
    LIVE_SESSIONS.labels("resume").set(live_resume)


def lease_renewed(seconds: float, lost: int = 0) -> None:
    """One batched renewal answered in ``seconds``; ``lost`` leases were not ours any more."""
    LEASE_RENEW_SECONDS.observe(seconds)
    if lost:
        LEASE_RENEW_FAILURES.labels("lost").inc(lost)


def lease_renew_failed() -> None:
    """A whole renewal batch failed (Redis unreachable or erroring)."""
    LEASE_RENEW_FAILURES.labels("redis_error").inc()


def self_fenced() -> None:
    """A worker dropped a session itself (lease lost, or no renewal in time)."""
    SELF_FENCES.inc()


def reconnect(kind: str) -> None:
    """``dropped``: a connected session's socket dropped; ``resumed``: a new owner resumed it."""
    RECONNECTS.labels(_label(kind)).inc()


def whatsapp_event(kind: str, data: dict[str, Any]) -> None:
    """A final or conflict event; a logout not at connect is WhatsApp's device_removed."""
    event = kind
    if kind == "logged_out":
        event = "logged_out" if data.get("on_connect") else "device_removed"
    WHATSAPP_EVENTS.labels(_label(event)).inc()


def record_webhook_delivery(outcome: str) -> None:
    """One webhook delivery attempt ended with ``outcome`` (see WEBHOOK_OUTCOMES)."""
    WEBHOOK_DELIVERIES.labels(outcome if outcome in WEBHOOK_OUTCOMES else "other").inc()


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    """One API request; ``route`` is the URL rule (``/api/whatsapp/pair``), never the path."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_SECONDS.labels(route, method).observe(seconds)


# --- scrape-time gauges from Redis --------------------------------------------
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
            states.add_metric([_label(state)], count)
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


def start_worker_exporter(port: int, bind: str) -> bool:
    """Serve this worker's metrics on ``bind:port`` (unauthenticated: keep it internal)."""
    if not port:
        return False
    start_http_server(port, addr=bind)
    return True
