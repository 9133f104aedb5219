"""wapair drain: the worker hands its sessions over (warm shutdown), then stops."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
import redis

from api.cli import main
from shared import keys
from shared.config import load_settings
from shared.state import SessionStore
from shared.taskqueue import create_celery, send_kick
from shared.tenants import TenantRegistry
from tests.e2e.conftest import live_connections
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Worker

pytestmark = pytest.mark.slow


def _connect(rclient: redis.Redis, env: dict[str, str], sandbox: SandboxProcess,
             tenant: str) -> str:
    """Pair ``tenant`` the way the API does (store transition + kick); return its owner."""
    TenantRegistry(rclient).create(tenant)
    accepted = SessionStore(rclient).begin_pairing(tenant, "qr", 30)
    send_kick(create_celery(load_settings(environ=env)), tenant, accepted.owner or None)
    qr = wait_for(lambda: rclient.get(keys.qr(tenant)), 15, f"a QR code for {tenant}")
    sandbox.scan(json.loads(qr)["code"])
    wait_for(lambda: rclient.hget(keys.session(tenant), "state") == b"connected", 15,
             f"{tenant} connected")
    return str(rclient.get(keys.lease(tenant)).decode().split("|")[0])


def test_drain_hands_the_sessions_over_then_stops_the_worker(
    start_worker: Callable[..., Worker], sandbox: SandboxProcess, rclient: redis.Redis,
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workers = {w.worker_id: w for w in (start_worker("d1"), start_worker("d2"))}
    tenant = f"drain-{uuid.uuid4().hex[:10]}"
    owner = _connect(rclient, stack_env, sandbox, tenant)
    (other,) = set(workers) - {owner}
    old = live_connections(sandbox, tenant)

    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    assert main(["drain", owner, "--timeout", "30"]) == 0

    out = capsys.readouterr().out
    assert f"draining {owner}: 1 tenant(s) to hand over" in out
    assert "1/1 handed over" in out and f"{owner} drained" in out
    workers[owner].proc.wait(15)  # the remote shutdown stopped the process itself
    assert not workers[owner].alive()
    assert "1 sessions handed over" in workers[owner].log(), "a warm hand-over, not expiry"
    wait_for(lambda: rclient.hget(keys.session(tenant), "state") == b"connected", 15,
             f"{tenant} connected again")
    assert rclient.get(keys.lease(tenant)).decode().startswith(other + "|")
    conns = sandbox.connections(tenant)
    before = next(c for c in conns if c["id"] == old[0]["id"])
    after = [c for c in conns if c["started_at"] > old[0]["started_at"]]
    assert len(after) == 1 and after[0]["started_at"] >= before["ended_at"]
    assert [c for c in sandbox.conflicts() if c["tenant"] == tenant] == []


def test_drain_of_an_unknown_worker_names_the_known_ones(
    start_worker: Callable[..., Worker], stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    assert main(["drain", "nobody@nowhere"]) == 2
    err = capsys.readouterr().err
    assert "no worker nobody@nowhere" in err
