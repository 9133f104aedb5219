"""Webhook deliveries to a real local HTTP receiver: signed, retried with backoff, given up."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.events import EventLog
from shared.state import SessionStore
from shared.webhooks import WebhookConfigs, WebhookDeliverer, sign
from tests.support.ports import free_port
from tests.support.receiver import LOCAL_RECEIVERS, Receiver


def one_event(client: redis.Redis, tenant: str) -> str:
    SessionStore(client).begin_pairing(tenant, "qr", 60)
    return EventLog(client).history(tenant, 1)[0].id


def deliverer(client: redis.Redis, clock: ManualClock, max_attempts: int = 5,
              rng: float = 1.0) -> WebhookDeliverer:
    return WebhookDeliverer(client, max_attempts=max_attempts, backoff_s=2.0, timeout_s=2.0,
                            clock=clock, rng=lambda: rng, outbound=LOCAL_RECEIVERS)


def test_a_failing_receiver_that_recovers_gets_the_event_signed(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    clock, sleeps = ManualClock(), []
    with Receiver([500, 503, 204]) as receiver:
        configs = WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS)
        secret = configs.set(tenant_id, receiver.url)["secret"]
        event_id = one_event(redis_client, tenant_id)
        outcome = deliverer(redis_client, clock).deliver(tenant_id, event_id, sleeps.append)
    assert outcome.status == "delivered" and outcome.http_status == 204
    assert redis_client.zscore(keys.webhook_pending(tenant_id), event_id) is None, "done"
    assert sleeps == [2.0, 4.0], "exponential backoff (jitter factor 1.0 here)"
    assert [r["headers"]["X-Wapair-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    last = receiver.requests[-1]
    body, headers = last["body"], last["headers"]
    timestamp = headers["X-Wapair-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["X-Wapair-Signature"] == "sha256=" + expected.hexdigest()
    assert hmac.compare_digest(headers["X-Wapair-Signature"], sign(secret, timestamp, body))
    assert timestamp == str(int(clock.time()))
    event = json.loads(body)
    assert event["id"] == event_id == headers["X-Wapair-Event-Id"] and event["tenant"] == tenant_id
    assert event["kind"] == "state" and event["data"]["state"] == "pairing"
    assert secret not in json.dumps(receiver.requests[0]["headers"]) + body.decode()
    delivery = WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS).get(tenant_id)["delivery"]
    assert delivery == {"last_event_id": event_id, "last_attempt_at": clock.time(),
                        "last_status": "delivered", "last_http_status": 204, "attempts": 3,
                        "last_error": None, "delivered": 1, "failed": 0}


def test_a_receiver_that_always_fails_is_given_up_after_the_bound(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    sleeps: list[float] = []
    with Receiver([500]) as receiver:
        WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS).set(tenant_id, receiver.url)
        event_id = one_event(redis_client, tenant_id)
        hooks = deliverer(redis_client, ManualClock(), max_attempts=4, rng=0.0)
        outcome = hooks.deliver(tenant_id, event_id, sleeps.append)
    assert outcome.status == "gave_up" and outcome.error == "HTTP 500"
    assert redis_client.zscore(keys.webhook_pending(tenant_id), event_id) is None, "given up"
    assert len(receiver.requests) == 4
    assert sleeps == [1.0, 2.0, 4.0], "exponential backoff (jitter factor 0.5 here)"
    delivery = WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS).get(tenant_id)["delivery"]
    assert delivery["last_status"] == "failed" and delivery["failed"] == 1
    assert delivery["attempts"] == 4 and delivery["last_error"] == "HTTP 500"


@pytest.mark.parametrize("draw", [0.0, 0.3, 0.999])
def test_jitter_keeps_each_delay_between_half_and_all_of_the_backoff(
    redis_client: redis.Redis, draw: float
) -> None:
    hooks = deliverer(redis_client, ManualClock(), rng=draw)
    for attempt in range(1, 6):
        full = 2.0 * 2 ** (attempt - 1)
        assert full / 2 <= hooks.delay_after(attempt) <= full


def test_an_unreachable_url_is_recorded_without_echoing_it_and_deletion_drops(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    url = f"http://localhost:{free_port()}/secret-path"
    configs = WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS)
    configs.set(tenant_id, url)
    event_id = one_event(redis_client, tenant_id)
    hooks = deliverer(redis_client, ManualClock())
    outcome = hooks.attempt(tenant_id, event_id, 1)
    assert outcome.status == "retry" and outcome.error == "ConnectionError"
    assert "secret-path" not in json.dumps(configs.get(tenant_id)["delivery"])
    configs.delete(tenant_id)
    assert hooks.attempt(tenant_id, event_id, 2).status == "dropped"
    assert redis_client.exists(f"wa:{{{tenant_id}}}:webhook") == 0, "no partial record revived"


def test_a_delivery_whose_task_was_never_sent_is_swept_and_then_forgotten(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    def broker_down(tenant: str, ids: list[str]) -> None:
        raise ConnectionError("broker unreachable")

    clock = ManualClock()
    resent: list[tuple[str, list[str]]] = []

    def mine() -> list[list[str]]:
        return [ids for tenant, ids in resent if tenant == tenant_id]

    with Receiver([200]) as receiver:
        configs = WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS)
        configs.set(tenant_id, receiver.url, ["state"])
        store = SessionStore(redis_client, clock, on_webhook_events=broker_down)
        store.begin_pairing(tenant_id, "qr", 60)  # accepted although the dispatch failed
        event_id = EventLog(redis_client).history(tenant_id, 1)[0].id
        hooks = deliverer(redis_client, clock)
        hooks.sweep(lambda t, ids: resent.append((t, ids)))
        assert mine() == [], "not overdue yet"
        clock.advance(hooks.sweep_grace_s + 1)
        hooks.sweep(lambda t, ids: resent.append((t, ids)))
        hooks.sweep(lambda t, ids: resent.append((t, ids)))
        assert mine() == [[event_id]], "re-sent once per grace period"
        assert hooks.attempt(tenant_id, event_id, 1).status == "delivered"
    assert redis_client.zcard(keys.webhook_pending(tenant_id)) == 0
    WebhookConfigs(redis_client, outbound=LOCAL_RECEIVERS).delete(tenant_id)
    hooks.sweep(lambda t, ids: None)
    assert not redis_client.sismember(keys.WEBHOOK_TENANTS, tenant_id)
