"""An API write answered as accepted must have reached a replica (Sentinel): real
redis-server processes, a primary with and without its replica."""

from __future__ import annotations

import time

import pytest
import redis

from api import create_app
from api.services import services_of
from shared import keys
from shared.config import load_settings
from shared.errors import StoreUnavailable
from shared.messages import MessageStore
from shared.redis_client import ack_replicas
from shared.state import NOT_REPLICATED, SessionStore
from shared.tenants import TenantRegistry
from tests.support.redis_proc import RedisProcess

TEXT = {"to": "+6281234567890", "chat": "6281234567890@s.whatsapp.net", "kind": "text",
        "text": "hi", "retry": "at_most_once"}


def test_the_default_asks_one_replica_with_sentinel_only() -> None:
    sentinel = {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"}
    assert ack_replicas(load_settings(environ={})) == (0, 0)
    assert ack_replicas(load_settings(environ=sentinel)) == (1, 750), (
        "half the fail-fast socket timeout (1.5 s at the default TTL), within the loss window")
    assert ack_replicas(load_settings(environ={**sentinel, "LEASE_TTL_S": "40",
                                               "REDIS_LOSS_WINDOW_S": "0.5"})) == (1, 500)
    assert ack_replicas(load_settings(environ={**sentinel, "LEASE_TTL_S": "3"})) == (1, 250), (
        "half the fail-fast socket timeout (0.5 s at a TTL of 3 s): a 503, not a timeout")
    assert ack_replicas(load_settings(environ={**sentinel, "REDIS_ACK_REPLICAS": "0"})) == (
        0, 0)


def test_a_write_no_replica_acknowledged_is_not_answered_as_accepted(tenant_id: str) -> None:
    primary, replica = RedisProcess().start(), RedisProcess().start()
    try:
        client = redis.Redis.from_url(primary.url)
        client.hset(keys.session(tenant_id), "state", "connected")
        sessions = SessionStore(client, replicas=(1, 200))
        messages = MessageStore(client, replicas=(1, 200))
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            sessions.enqueue(tenant_id, "reset")
        assert str(refused.value) == NOT_REPLICATED
        assert time.monotonic() - started < 2, "WAIT's timeout bounds it"
        with pytest.raises(StoreUnavailable):
            messages.accept(tenant_id, dict(TEXT), idempotency_key="k1", body={"a": 1})

        other = redis.Redis.from_url(replica.url)
        other.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        deadline = time.monotonic() + 10
        while other.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        # The retry with its key names the same message, now on the replica as well.
        again = messages.accept(tenant_id, dict(TEXT), idempotency_key="k1", body={"a": 1})
        assert not again.created and other.exists(keys.message(tenant_id, again.id))
        assert sessions.enqueue(tenant_id, "logout")
        assert other.llen(keys.mailbox(tenant_id)) == client.llen(keys.mailbox(tenant_id))
        other.close()
        client.close()
    finally:
        primary.cleanup()
        replica.cleanup()


def test_the_api_answers_503_not_202_without_the_replica(redis_url: str, tenant_id: str
                                                          ) -> None:
    app = create_app({"redis_url": redis_url, "admin_token": "a" * 32, "wa_backend": "sandbox",
                      "redis_ack_replicas": "1", "redis_loss_window_s": "0.2"})
    try:
        client = redis.Redis.from_url(redis_url)
        key = TenantRegistry(client).create(tenant_id)
        response = app.test_client().post(
            "/api/whatsapp/reset", headers={"X-Tenant-ID": tenant_id,
                                            "Authorization": f"Bearer {key}"})
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["error"]["code"] == "store_unavailable"
        assert "no replica acknowledged" in response.get_json()["error"]["message"]
        assert response.headers["Retry-After"]
        client.close()
    finally:
        services_of(app).close()


def test_the_owners_sending_must_reach_a_replica_before_the_hand_over(tenant_id: str) -> None:
    """A promotion that lost 'sending' would bring back 'queued', and the next owner would
    send the message again: so the owner's move to 'sending' waits for a replica."""
    from shared.messages import SendingNotReplicated

    primary = RedisProcess().start()
    try:
        client = redis.Redis.from_url(primary.url)
        client.hset(keys.session(tenant_id), "state", "connected")
        client.set(keys.fence(tenant_id), 3)
        plain, waiting = MessageStore(client), MessageStore(client, replicas=(1, 100))
        first = plain.accept(tenant_id, dict(TEXT)).id
        with pytest.raises(SendingNotReplicated):
            waiting.begin_send(tenant_id, 3, first, sending_at="1.000")
        assert plain.read(tenant_id, first)["status"] == "sending"  # the owner puts it back
        with pytest.raises(SendingNotReplicated):
            waiting.move(tenant_id, 3, plain.accept(tenant_id, dict(TEXT)).id, "sending",
                         ("queued",))
        # Nothing of ours written: no wait to fail (the message is not queued any more).
        assert waiting.begin_send(tenant_id, 3, first)[0] == 2
        # Moves that hand nothing over do not wait.
        assert waiting.move(tenant_id, 3, first, "queued", ("sending",)) == (1, "")
    finally:
        primary.cleanup()
