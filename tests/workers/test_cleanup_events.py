"""Beat's cleanup writes the events of the pairings it expires, in the same step."""

from __future__ import annotations

import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.events import EventLog
from shared.state import SessionStore
from shared.webhooks import WebhookConfigs
from tests.support.receiver import LOCAL_RECEIVERS
from workers.cleanup import sweep


def test_an_orphaned_pairing_expired_by_cleanup_has_its_events_and_pending_webhooks(
    private_redis: redis.Redis, tenant_id: str
) -> None:
    redis_client = private_redis
    clock = ManualClock()
    redis_client.sadd(keys.TENANTS, tenant_id)
    WebhookConfigs(redis_client, clock, outbound=LOCAL_RECEIVERS).set(
        tenant_id, "http://localhost:9/hook", ["state"])
    store = SessionStore(redis_client, clock)
    pairing_id = store.begin_pairing(tenant_id, "phone", 30, "+6281234567890").command.pairing_id
    redis_client.set(keys.pair_code(tenant_id), "{}", px=60_000)
    clock.advance(31)
    assert tenant_id in sweep(redis_client, load_settings(environ={}), clock).expired
    events = EventLog(redis_client).history(tenant_id, 10)
    assert [e.kind for e in events] == ["pairing", "state", "pairing", "state", "error"]
    assert events[2].data == {"pairing_id": pairing_id, "status": "expired",
                              "previous": "queued", "method": "phone"}
    assert events[3].data["state"] == "idle" and events[3].data["previous"] == "pairing"
    assert events[4].data["code"] == "pairing_expired"
    assert not redis_client.exists(keys.pair_code(tenant_id))
    pending = {m.decode() for m in redis_client.zrange(keys.webhook_pending(tenant_id), 0, -1)}
    assert pending == {events[1].id, events[3].id}, "both state changes await delivery"
    assert redis_client.sismember(keys.WEBHOOK_TENANTS, tenant_id)


def test_the_dispatcher_never_blocks_the_writer_and_survives_a_failing_broker() -> None:
    import threading

    from workers.webhook_task import WebhookDispatcher

    sent: list[tuple[str, list[str]]] = []
    release, done = threading.Event(), threading.Event()

    def send(tenant: str, ids: list[str]) -> None:
        release.wait(5)
        if tenant == "down":
            raise ConnectionError("broker unreachable")
        sent.append((tenant, ids))
        done.set()

    dispatcher = WebhookDispatcher(send, capacity=2)
    dispatcher.submit("down", ["1-0"])  # taken by the thread, which then blocks
    dispatcher.submit("t1", ["2-0"])
    dispatcher.submit("t1", ["3-0"])
    dispatcher.submit("t1", ["4-0"])  # returns at once although the queue is full
    release.set()
    assert done.wait(5)
    assert sent[0] == ("t1", ["2-0"])
