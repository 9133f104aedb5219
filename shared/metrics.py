"""Every Prometheus metric wapair exports, and the small calls that record them.

Definitions live here and nowhere else; the code calls the helpers below at
the points of interest, and the dashboards and alert rules in ``deploy/`` may
use only the names in :data:`METRIC_NAMES` (a test checks it).

Two ways out:

- the API serves ``GET /metrics`` (``api/metrics.py`` with
  ``shared/metrics_exposition.py``). Under gunicorn every worker process writes
  its samples to ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint aggregates them;
  without that variable (one process) it serves this process's registry. It
  also adds cluster-wide gauges computed from Redis at scrape time (their names
  are below; same value from every replica, so dashboards take ``max``).
- each Celery worker serves its own registry on ``WORKER_METRICS_PORT``
  (:func:`start_worker_exporter`); a worker is one process (threads pool).

Labels are closed sets (reasons are our own error codes, routes are URL rules),
never tenant ids, except the top-N mailbox gauge computed at scrape.

Over 300 lines: every definition lives here so that :data:`METRIC_NAMES`, which the
dashboards and alert rules are checked against, can never miss one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

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

# --- connection hosts (workers/host/) -----------------------------------------
CONNECTION_HOSTS = Gauge(
    "wapair_connection_hosts", "Connection-host processes of this worker",
    multiprocess_mode="livesum",
)
HOST_SESSIONS = Gauge(
    "wapair_host_sessions_max", "Sessions on this worker's fullest connection host",
    multiprocess_mode="livemax",
)
HOSTS_STARTED = Counter("wapair_hosts_started", "Connection hosts this worker started")
HOSTS_LOST = Counter(
    "wapair_hosts_lost",
    "Connection hosts that ended other than at shutdown: exited (aborted, crashed, or its "
    "lease window passed), close_timeout, silent (stopped or wedged), recycled (a leak bound)",
    ["reason"],
)
HOST_START_SECONDS = Histogram(
    "wapair_host_start_seconds", "From starting a connection host to its ready frame",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5),
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

# --- messages (workers) ---------------------------------------------------------
MESSAGES_SENT = Counter(
    "wapair_messages_finished",
    "Outbound messages by how their send ended (sent, failed, unknown)", ["outcome"],
)
MESSAGES_RECEIVED = Counter("wapair_messages_received", "Inbound messages recorded (once each)")
SEND_SECONDS = Histogram(
    "wapair_message_send_seconds",
    "From recording a message 'sending' to WhatsApp's answer: the window in which an "
    "owner's death leaves it 'unknown'",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- computed from Redis at scrape time (shared/metrics_exposition.py) -------
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
            WEBHOOK_DELIVERIES, CONNECTION_HOSTS, HOST_SESSIONS, HOSTS_STARTED, HOSTS_LOST,
            HOST_START_SECONDS, MESSAGES_SENT, MESSAGES_RECEIVED, SEND_SECONDS,
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


def label_value(value: object) -> str:
    """A label value from a closed vocabulary; anything else becomes 'other'."""
    text = str(value)
    return text if _LABEL.fullmatch(text) else "other"


# --- recording helpers (small calls at the points of interest) ----------------
def message_finished(outcome: str, send_seconds: float | None = None) -> None:
    """An outbound message's send ended ``outcome``; ``send_seconds``: its time in 'sending'."""
    MESSAGES_SENT.labels(label_value(outcome)).inc()
    if send_seconds is not None:
        SEND_SECONDS.observe(send_seconds)


def message_received() -> None:
    """An inbound message was recorded for the first time."""
    MESSAGES_RECEIVED.inc()


def pairing_started(method: str) -> None:
    """The API accepted a pairing."""
    PAIRINGS_STARTED.labels(label_value(method)).inc()


def pairing_ended(status: str, error: str = "") -> None:
    """A pairing ended with ``status`` (paired, expired, failed, cancelled) and its last_error."""
    outcome = _OUTCOMES.get(status, "other")
    reason = outcome
    if error:
        try:
            reason = str(json.loads(error).get("code") or outcome)
        except (ValueError, AttributeError):
            reason = "other"
    PAIRINGS_ENDED.labels(outcome, label_value(reason)).inc()


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
    RECONNECTS.labels(label_value(kind)).inc()


def whatsapp_event(kind: str, data: dict[str, Any]) -> None:
    """A final or conflict event; a logout not at connect is WhatsApp's device_removed."""
    event = kind
    if kind == "logged_out":
        event = "logged_out" if data.get("on_connect") else "device_removed"
    WHATSAPP_EVENTS.labels(label_value(event)).inc()


def host_started() -> None:
    """The worker started a connection host."""
    HOSTS_STARTED.inc()


def host_lost(reason: str) -> None:
    """A connection host ended other than at shutdown (see HOSTS_LOST for the reasons)."""
    HOSTS_LOST.labels(label_value(reason)).inc()


def observe_host_start(seconds: float) -> None:
    """A connection host answered ``ready`` ``seconds`` after it was started."""
    HOST_START_SECONDS.observe(seconds)


def set_hosts(hosts: int, fullest: int) -> None:
    """This worker's connection hosts and the sessions on its fullest one."""
    CONNECTION_HOSTS.set(hosts)
    HOST_SESSIONS.set(fullest)


def record_webhook_delivery(outcome: str) -> None:
    """One webhook delivery attempt ended with ``outcome`` (see WEBHOOK_OUTCOMES)."""
    WEBHOOK_DELIVERIES.labels(outcome if outcome in WEBHOOK_OUTCOMES else "other").inc()


# The labelled children of the request metrics, by (route, method, status): labels()
# validates and locks on every call, half of what recording a request cost.
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    """One API request; ``route`` is the URL rule (``/api/whatsapp/pair``), never the path."""
    key = (route, method, status)
    children = _http_children.get(key)
    if children is None:
        # Routes, methods and statuses are closed sets, so the cache stays small.
        children = _http_children[key] = (HTTP_REQUESTS.labels(route, method, str(status)),
                                          HTTP_SECONDS.labels(route, method))
    children[0].inc()
    children[1].observe(seconds)


def start_worker_exporter(port: int, bind: str) -> bool:
    """Serve this worker's metrics on ``bind:port`` (unauthenticated: keep it internal)."""
    if not port:
        return False
    start_http_server(port, addr=bind)
    return True
