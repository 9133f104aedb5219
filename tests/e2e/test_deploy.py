"""deploy/rollout.py against local processes: a rolling upgrade and a one-command rollback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Tenant, live_connections, pair_and_connect
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import ROOT, Api

pytestmark = pytest.mark.slow
HANDOVER_S = 3.0


@pytest.fixture
def rollout(stack_env: dict[str, str]) -> Iterator[Callable[..., str]]:
    root = Path(tempfile.mkdtemp(prefix="wapair-deploy-"))
    env = {**os.environ, **stack_env}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "deploy" / "rollout.py"),
                               "--root", str(root), "--timeout", "30", *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    yield run
    subprocess.run([sys.executable, str(ROOT / "deploy" / "rollout.py"), "--root", str(root),
                    "stop"], env=env, capture_output=True, timeout=120)


def _releases(root_status: str) -> set[str]:
    """The release each worker process runs, read from the process itself (its cwd)."""
    found = set()
    for line in root_status.splitlines():
        if line.startswith("w"):  # "w1: pid 123 release v1"
            pid = line.split()[2]
            found.add(Path(os.readlink(f"/proc/{pid}/cwd")).name)
    return found


def test_rolling_upgrade_then_rollback_keep_every_tenant_connected(
    rollout: Callable[..., str], start_api: Callable[..., Api], sandbox: SandboxProcess
) -> None:
    rollout("release", str(ROOT), "v1")
    rollout("release", str(ROOT), "v2")
    rollout("start", "--workers", "2")
    assert _releases(rollout("status")) == {"v1"}
    api = start_api("api-deploy")
    tenants = [Tenant(api, f"deploy-{i}-{uuid.uuid4().hex[:8]}") for i in range(3)]
    for tenant in tenants:
        pair_and_connect(tenant, api, sandbox)

    out = rollout("activate", "v2")
    assert "handed over" in out
    assert _releases(rollout("status")) == {"v2"}
    assert "current: v2  previous: v1" in rollout("status")
    _all_connected_without_overlap(tenants, api, sandbox)

    rollout("rollback")
    status = rollout("status")
    assert "current: v1  previous: v2" in status and _releases(status) == {"v1"}
    _all_connected_without_overlap(tenants, api, sandbox)


def _all_connected_without_overlap(tenants: list[Tenant], api: Api,
                                   sandbox: SandboxProcess) -> None:
    for tenant in tenants:
        tenant.wait_state(api, "connected", 10)
        conns = sandbox.connections(tenant.id)
        assert len(live_connections(sandbox, tenant.id)) == 1
        for old, new in zip(conns, conns[1:], strict=False):
            assert old["ended_at"] is not None and new["started_at"] >= old["ended_at"]
            if old["device"] and new["mode"] == "resume":
                assert new["started_at"] - old["ended_at"] <= HANDOVER_S
    ids = {t.id for t in tenants}
    assert [c for c in sandbox.conflicts() if c["tenant"] in ids] == []
