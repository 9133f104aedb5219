"""The state store's transitions, as the API uses them."""

from __future__ import annotations

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.errors import Conflict, NotFound, PairingInProgress
from shared.state import Command, SessionStore


def test_accepted_commands_name_the_owner_worker_not_its_token(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    redis_client.set(keys.lease(tenant_id), "w1@host|5f3a", px=10_000)
    store = SessionStore(redis_client)
    assert store.begin_pairing(tenant_id, "qr", 60).owner == "w1@host"
    assert store.enqueue(tenant_id, "reset").owner == "w1@host"
    assert store.status(tenant_id)["owner"] == "w1@host"


def test_pairing_retry_after_counts_down_to_the_deadline(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    clock = ManualClock()
    store = SessionStore(redis_client, clock)
    store.begin_pairing(tenant_id, "qr", 120)
    clock.advance(100)
    with pytest.raises(PairingInProgress) as busy:
        store.begin_pairing(tenant_id, "qr", 120)
    assert busy.value.retry_after_s == 20
    assert redis_client.llen(keys.mailbox(tenant_id)) == 1


def test_connected_refuses_pairing_and_resume(redis_client: redis.Redis, tenant_id: str) -> None:
    store = SessionStore(redis_client)
    with pytest.raises(NotFound):
        store.enqueue(tenant_id, "resume")
    redis_client.hset(keys.session(tenant_id), mapping={"state": "connected", "device": "1:1@s"})
    with pytest.raises(Conflict):
        store.begin_pairing(tenant_id, "qr", 60)
    with pytest.raises(Conflict):
        store.enqueue(tenant_id, "resume")


def test_commands_round_trip_through_json() -> None:
    command = Command("c_1", "pair", "t1", 1.5, "p_1", "qr")
    assert Command.from_json(command.to_json()) == command
