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


def test_a_take_acks_the_command_just_run_only_for_the_lease_holder(
    redis_client: redis.Redis, tenant_id: str
) -> None:
    store = SessionStore(redis_client)
    redis_client.set(keys.lease(tenant_id), "w1@host|5f3a", px=10_000)
    first = store.enqueue(tenant_id, "reset").command
    second = store.enqueue(tenant_id, "logout").command
    assert store.take_command(tenant_id, "w1@host|5f3a").command == first
    assert store.take_command(tenant_id, "w1@host|5f3a").command == first, \
        "unacked, the unfinished one comes again"
    assert store.take_command(tenant_id, "w2@host|0000", first).command is None
    assert redis_client.lrange(keys.inflight(tenant_id), 0, -1) == [first.to_json().encode()], \
        "a take by another owner acks nothing"
    assert store.take_command(tenant_id, "w1@host|5f3a", first).command == second
    assert redis_client.lrange(keys.inflight(tenant_id), 0, -1) == [second.to_json().encode()]
    assert store.take_command(tenant_id, "w1@host|5f3a", second).command is None
    assert not redis_client.llen(keys.inflight(tenant_id))


def test_take_ahead_passes_over_sends_only(booted_redis: redis.Redis, tenant_id: str) -> None:
    """A reset or logout goes ahead of waiting sends, never ahead of a pair or resume."""
    store = SessionStore(booted_redis)
    owner = "w1|1"
    booted_redis.set(keys.lease(tenant_id), owner)
    commands = [Command(f"c{i}", kind, tenant_id, 1.0) for i, kind in
                enumerate(["send", "send", "logout", "resume", "reset"])]
    booted_redis.rpush(keys.inflight(tenant_id), commands[0].to_json())
    booted_redis.rpush(keys.mailbox(tenant_id), *[c.to_json() for c in commands[1:]])
    assert store.take_ahead(tenant_id, "w2|9") is None, "only the owner"
    assert store.take_ahead(tenant_id, owner) == commands[2]
    assert booted_redis.lrange(keys.inflight(tenant_id), 0, -1) == [
        commands[2].to_json().encode(), commands[0].to_json().encode()]
    assert store.take_ahead(tenant_id, owner) is None, "the reset waits behind the resume"
    assert [Command.from_json(c).kind for c in booted_redis.lrange(
        keys.mailbox(tenant_id), 0, -1)] == ["send", "resume", "reset"]
    for key in (keys.lease(tenant_id), keys.inflight(tenant_id), keys.mailbox(tenant_id)):
        booted_redis.delete(key)
