"""The session and host record their metrics where things happen (real Redis, scripted client).

Counters are process-wide and the host may also claim other tests' tenants, so the
checks are "went up", on the labels only this test's tenant produces.
"""

from __future__ import annotations

import redis
from prometheus_client import REGISTRY

from shared import keys
from shared.clock import ManualClock
from shared.whatsapp.port import EventKind
from tests.workers import test_session_host as base
from tests.workers.scripted_backend import ScriptedBackend
from tests.workers.test_session_host import TIMEOUT_S, owned_connected, owned_pairing
from workers.session_host import SessionHost

# The SessionHost unit tests' fixtures, shared rather than copied.
backend, clock, host, kicks = base.backend, base.clock, base.host, base.kicks


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pairing_metrics_first_qr_and_expiry(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    first_qr = sample("wapair_pairing_first_qr_seconds_count")
    expired = sample("wapair_pairings_ended_total", outcome="expired", reason="pairing_expired")
    session = owned_pairing(host, booted_redis, backend, clock, tenant_id)
    session.emit(EventKind.QR, code="2@a", expires_in=60, index=0)
    session.emit(EventKind.QR, code="2@b", expires_in=20, index=1)
    assert sample("wapair_pairing_first_qr_seconds_count") == first_qr + 1, "only the first QR"
    host.tick()
    assert sample("wapair_owned_tenants") >= 1
    assert sample("wapair_live_sessions", mode="pair") >= 1
    clock.advance(TIMEOUT_S + 1)
    host.tick()
    assert sample("wapair_pairings_ended_total", outcome="expired",
                  reason="pairing_expired") >= expired + 1


def test_conflicts_reconnects_and_self_fences(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, clock: ManualClock,
    tenant_id: str,
) -> None:
    resumed = sample("wapair_reconnects_total", kind="resumed")
    dropped = sample("wapair_reconnects_total", kind="dropped")
    removed = sample("wapair_whatsapp_events_total", event="device_removed")
    session = owned_connected(host, booted_redis, backend, tenant_id)
    assert sample("wapair_reconnects_total", kind="resumed") >= resumed + 1
    session.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    session.emit(EventKind.DISCONNECTED, reason="keepalive")
    assert sample("wapair_reconnects_total", kind="dropped") == dropped + 1
    session.emit(EventKind.CONNECTED, jid="6281:5@s.whatsapp.net")
    session.emit(EventKind.LOGGED_OUT, reason=401, on_connect=False, detail="device_removed")
    assert sample("wapair_whatsapp_events_total", event="device_removed") == removed + 1

    fences = sample("wapair_self_fences_total")
    lost = sample("wapair_lease_renew_failures_total", reason="lost")
    renewals = sample("wapair_lease_renew_seconds_count")
    other = f"{tenant_id}-b"
    owned_connected(host, booted_redis, backend, other)
    booted_redis.delete(keys.lease(other))  # Redis lost it
    clock.advance(6)
    host.tick()
    assert sample("wapair_self_fences_total") >= fences + 1
    assert sample("wapair_lease_renew_failures_total", reason="lost") >= lost + 1
    assert sample("wapair_lease_renew_seconds_count") >= renewals + 1


def test_the_write_observer_counts_a_reconnect_by_its_cause_only() -> None:
    from shared import owner_writes as writes
    from workers.session.observers import SessionMetrics

    observer = SessionMetrics()
    before = {kind: sample("wapair_reconnects_total", kind=kind)
              for kind in ("dropped", "resumed", "keepalive", "shutdown")}
    for cause in ("dropped", "resumed", "keepalive", "shutdown", "resumed"):
        observer.applied("t-x", writes.reconnecting(cause=cause), 0.0)
    after = {kind: sample("wapair_reconnects_total", kind=kind) for kind in before}
    assert {k: after[k] - before[k] for k in before} == {
        "dropped": 1, "resumed": 2, "keepalive": 0, "shutdown": 0}


def test_message_metrics_count_a_send_once_and_an_inbound_delivered_twice_once(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
) -> None:
    """The session tells its observers (SessionMetrics) of each send's end and each first
    inbound record; the metrics are not counted inline in the messaging code."""
    from shared.messages import MessageStore
    from tests.support.ports import wait_for

    sent = sample("wapair_messages_finished_total", outcome="sent")
    received = sample("wapair_messages_received_total")
    session = owned_connected(host, booted_redis, backend, tenant_id)
    wait_for(lambda: host.sessions[tenant_id].online.is_set(), 5, "the client online")
    session.answer = lambda chat, content: "WA-M1"
    chat = "6281234567890@s.whatsapp.net"
    message_id = MessageStore(booted_redis).accept(tenant_id, {
        "to": "+6281234567890", "chat": chat, "kind": "text", "text": "hi",
        "retry": "at_most_once"}).id
    host.kick(tenant_id)
    wait_for(lambda: MessageStore(booted_redis).get(tenant_id, message_id)["status"] == "sent",
             5, "the message sent")
    for ack in ("m0", "m1"):
        session.emit(EventKind.MESSAGE, wa_message_id="3AMETRIC", text="yo", chat=chat,
                     at=7.0, type="text", ack=ack, **{"from": chat})
    wait_for(lambda: len(session.acked) == 2, 5, "both deliveries acked")
    assert sample("wapair_messages_finished_total", outcome="sent") >= sent + 1
    assert sample("wapair_messages_received_total") == received + 1
    booted_redis.srem(keys.ACTIVE, tenant_id)
    for key in booted_redis.scan_iter(f"wa:{{{tenant_id}}}:*"):
        booted_redis.delete(key)
