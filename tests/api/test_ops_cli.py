"""wapair status and reset against a real Redis (drain: tests/e2e/test_drain.py)."""

from __future__ import annotations

import json

import pytest
import redis

from api.cli import main
from shared import keys
from shared.lease import LeaseKeeper
from shared.state import SessionStore
from shared.taskqueue import KICK_TASK, worker_queue
from shared.tenants import TenantRegistry


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEASE_TTL_S", "15")


def test_status_shows_state_owner_and_lease_age(
    booted_redis: redis.Redis, tenant_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    TenantRegistry(booted_redis).create(tenant_id)
    SessionStore(booted_redis).begin_pairing(tenant_id, "qr", 120)
    granted = LeaseKeeper(booted_redis, "w-status@test", 15).acquire(tenant_id)
    assert granted.lease is not None
    booted_redis.pexpire(keys.lease(tenant_id), 12_000)  # as if renewed 3 s ago

    assert main(["status", "--tenant", tenant_id]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["TENANT", "STATE", "PAIRING", "OWNER", "LEASE_AGE", "FENCE",
                              "MAIL", "UPDATED"]
    cells = row.split()
    assert cells[:4] == [tenant_id, "pairing", "queued", "w-status@test"]
    assert 2.9 <= float(cells[4].rstrip("s")) <= 4.0
    assert cells[5:7] == [str(granted.lease.fence), "1"]

    assert main(["status"]) == 0
    assert any(line.split()[0] == tenant_id for line in capsys.readouterr().out.splitlines())


def test_status_of_an_unknown_tenant_is_a_clear_error(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--tenant", "no-such-tenant"]) == 2
    assert "unknown tenant no-such-tenant" in capsys.readouterr().err


def test_reset_queues_the_command_and_kicks_the_owner_like_the_api(
    booted_redis: redis.Redis, tenant_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    TenantRegistry(booted_redis).create(tenant_id)
    owner = f"w-{tenant_id}@test"
    assert LeaseKeeper(booted_redis, owner, 15).acquire(tenant_id).lease is not None

    assert main(["reset", tenant_id]) == 0
    assert f"owner: {owner}" in capsys.readouterr().out
    (command,) = [json.loads(c) for c in booted_redis.lrange(keys.mailbox(tenant_id), 0, -1)]
    assert (command["kind"], command["tenant"]) == ("reset", tenant_id)
    # The kick went to the owner's own queue, as the API sends it.
    (message,) = booted_redis.lrange(worker_queue(owner).name, 0, -1)
    headers = json.loads(message)["headers"]
    assert (headers["task"], json.loads(headers["argsrepr"].replace("'", '"'))) == (
        KICK_TASK, [tenant_id])
    assert booted_redis.sismember(keys.ACTIVE, tenant_id)


def test_reset_of_an_unknown_tenant_queues_nothing(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reset", "ghost-tenant"]) == 2
    assert "unknown tenant" in capsys.readouterr().err
    assert redis_client.llen(keys.mailbox("ghost-tenant")) == 0


def test_worker_check_reads_the_heartbeat(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    redis_client.zadd(keys.WORKERS, {"fresh@test": time.time() - 5, "stale@test": time.time() - 90})
    try:
        assert main(["worker-check", "fresh@test"]) == 0
        assert main(["worker-check", "stale@test", "--max-age", "60"]) == 1
        assert main(["worker-check", "never@test"]) == 1
        assert "no heartbeat" in capsys.readouterr().err
    finally:
        redis_client.zrem(keys.WORKERS, "fresh@test", "stale@test")


def test_drain_refuses_to_stop_the_last_worker_with_tenants(
    booted_redis: redis.Redis, tenant_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    worker = f"last-{tenant_id}@test"
    booted_redis.delete(keys.WORKERS)  # this test's worker is the only one alive
    booted_redis.zadd(keys.WORKERS, {worker: time.time()})
    TenantRegistry(booted_redis).create(tenant_id)
    assert LeaseKeeper(booted_redis, worker, 15).acquire(tenant_id).lease is not None
    try:
        assert main(["drain", worker]) == 2
        assert "only live worker" in capsys.readouterr().err
    finally:
        booted_redis.zrem(keys.WORKERS, worker)
