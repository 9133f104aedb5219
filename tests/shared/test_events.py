"""Events are written in the same Lua step as the change they describe: none lost or invented."""

from __future__ import annotations

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.errors import Conflict, InvalidInput, PairingInProgress
from shared.events import EventLog, validate_event_id
from shared.phone import mask_phone, normalize_e164
from shared.state import SessionStore


def kinds(client: redis.Redis, tenant: str) -> list[str]:
    return [e.kind for e in EventLog(client).history(tenant, 100)]


def test_fenced_writes_append_their_events_and_refused_ones_append_none(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    store = SessionStore(redis_client, ManualClock())
    pairing_id = store.begin_pairing(tenant_id, "qr", 60).command.pairing_id
    assert kinds(redis_client, tenant_id) == ["pairing", "state"]
    redis_client.set(keys.fence(tenant_id), 7)
    qr = '{"code": "2@a", "index": 0, "expires_at": 1.0}'
    assert store.fenced_write(tenant_id, 7, pairing={"status": "qr"}, pairing_id=pairing_id,
                              qr={"value": qr, "ttl_ms": 5000}) == 1
    before = redis_client.xlen(keys.events(tenant_id))
    session_before = redis_client.hgetall(keys.session(tenant_id))
    # A writer whose lease was taken over (older fence): no state, no event.
    assert store.fenced_write(tenant_id, 6, session={"state": "connected"},
                              pairing={"status": "paired"}, pairing_id=pairing_id,
                              qr={"value": qr, "ttl_ms": 5000}) == 0
    assert redis_client.xlen(keys.events(tenant_id)) == before
    assert redis_client.hgetall(keys.session(tenant_id)) == session_before
    # A pairing update for another pairing: the pairing part and its event are skipped.
    assert store.fenced_write(tenant_id, 7, pairing={"status": "paired"},
                              pairing_id="p_other") == 2
    # Writing the same state again is not a change: no event.
    store.fenced_write(tenant_id, 7, session={"state": "pairing"})
    store.fenced_write(tenant_id, 7, session={"state": "idle",
                                              "last_error": '{"code": "pairing_expired"}'},
                       qr="del")
    events = EventLog(redis_client).history(tenant_id, 100)
    assert [e.kind for e in events] == ["pairing", "state", "pairing", "qr", "state", "error"]
    assert events[3].data == {"code": "2@a", "index": 0, "expires_at": 1.0}
    assert events[4].data["state"] == "idle" and events[4].data["previous"] == "pairing"
    assert events[4].data["error"] == {"code": "pairing_expired"}
    assert events[5].data == {"code": "pairing_expired"}
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_refused_transitions_append_no_event(redis_client: redis.Redis, tenant_id: str) -> None:
    store = SessionStore(redis_client, ManualClock())
    store.begin_pairing(tenant_id, "qr", 60)
    with pytest.raises(PairingInProgress):
        store.begin_pairing(tenant_id, "qr", 60)
    assert kinds(redis_client, tenant_id) == ["pairing", "state"]
    redis_client.hset(keys.session(tenant_id), mapping={"state": "connected", "device": "1:1@s"})
    with pytest.raises(Conflict):
        store.begin_pairing(tenant_id, "qr", 60)
    with pytest.raises(Conflict):
        store.enqueue(tenant_id, "resume")
    store.enqueue(tenant_id, "reset")  # queues a command, changes no state
    assert kinds(redis_client, tenant_id) == ["pairing", "state"]
    redis_client.hset(keys.session(tenant_id), "state", "idle")
    store.enqueue(tenant_id, "resume")
    last = EventLog(redis_client).history(tenant_id, 1)[0]
    assert last.kind == "state" and last.data["state"] == "reconnecting"
    assert last.data["device"] == "1:1@s"


def test_only_the_kinds_a_webhook_wants_are_handed_to_the_dispatcher(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    dispatched: list[tuple[str, list[str]]] = []
    store = SessionStore(redis_client, on_webhook_events=lambda t, ids: dispatched.append((t, ids)))
    store.begin_pairing(tenant_id, "qr", 60)
    assert dispatched == [], "no webhook set: nothing to deliver"
    store.enqueue(tenant_id, "reset")
    redis_client.hset(keys.webhook(tenant_id), mapping={"url": "http://x", "kinds": "state"})
    redis_client.hset(keys.session(tenant_id), "state", "idle")
    store.begin_pairing(tenant_id, "qr", 60)
    state_id = EventLog(redis_client).history(tenant_id, 1)[0].id
    assert dispatched == [(tenant_id, [state_id])]


def test_the_stream_is_trimmed_and_history_reads_newest_last(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    store = SessionStore(redis_client, events_maxlen=10)
    redis_client.set(keys.fence(tenant_id), 1)
    for i in range(400):
        store.fenced_write(tenant_id, 1, session={"state": "pairing" if i % 2 else "idle"})
    assert redis_client.xlen(keys.events(tenant_id)) < 200  # MAXLEN ~ trims whole nodes
    history = EventLog(redis_client).history(tenant_id, 3)
    assert len(history) == 3 and history[-1].data["state"] == "pairing"
    log = EventLog(redis_client)
    assert [e.id for e in log.after(tenant_id, history[0].id, block_ms=1)] == [
        history[1].id, history[2].id]
    assert log.get(tenant_id, history[1].id) == history[1]
    assert log.get(tenant_id, "1-0") is None


def test_phone_numbers_are_strict_e164_and_masked() -> None:
    assert normalize_e164("+6281234567890") == "+6281234567890"
    assert mask_phone("+6281234567890") == "+62*******7890"
    for bad in ("", "6281234567890", "+999", "+62 12", "+1 555 0100 999999", None, 6281,
                " +6281234567890", "+62 812-3456-7890", "+0281234567890", "+6281234567890\n",
                "+1234567890123456"):
        with pytest.raises(InvalidInput):
            normalize_e164(bad)
    assert validate_event_id("1764140000000-0") == "1764140000000-0"
    with pytest.raises(InvalidInput):
        validate_event_id("$")
