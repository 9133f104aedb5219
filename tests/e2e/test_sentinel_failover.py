"""kill -9 of the Redis primary under Sentinel, with tenants connected and commands flowing.

Real processes throughout: a primary, a replica and three Sentinels, the sandbox
network, two workers, beat and an API, all following Sentinel. The promotion
counts as a restart: no lease is granted for one TTL, holders that cannot renew
fence, then every tenant is connected again by itself.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import requests

from shared import keys
from shared.config import load_settings
from shared.redis_client import connect_redis
from tests.e2e.conftest import (
    LEASE_TTL_S,
    Tenant,
    live_connections,
    pair_and_connect,
    sandbox_stack_env,
)
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.sentinel_proc import MASTER, SentinelGroup
from tests.support.services import Api, Service, Worker

pytestmark = pytest.mark.slow
CONNECTED_TENANTS = 3


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    group = SentinelGroup(down_after_ms=1000).start()
    group.client(group.primary_port()).set(keys.BOOT_MARKER, "1")
    yield group
    group.cleanup()


@pytest.fixture(scope="module")
def stack_env(group: SentinelGroup, sandbox: SandboxProcess) -> dict[str, str]:
    return {
        # Only the database number counts with Sentinel; the host is never dialled.
        "REDIS_URL": "redis://sentinel-managed:1/0",
        "REDIS_SENTINELS": group.sentinels,
        "REDIS_SENTINEL_MASTER": MASTER,
        **sandbox_stack_env(sandbox),
        # Commands flow without pause through the failover: keep the limiter out of it.
        "RATE_LIMIT_TENANT": "100000/minute",
        "RATE_LIMIT_ADDRESS": "1000000/minute",
    }


@pytest.fixture(scope="module")
def rclient(stack_env: dict[str, str]) -> Iterator[redis.Redis]:
    client = connect_redis(load_settings(environ=stack_env))
    yield client
    client.close()
    for sentinel in client.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        sentinel.close()


class CommandFlow:
    """POSTs reset commands for one tenant in a loop; remembers every answer."""

    def __init__(self, tenant: Tenant, api: Api) -> None:
        self.tenant, self.api = tenant, api
        self.accepted: list[tuple[float, str]] = []  # (when, command id)
        self.refused: list[tuple[float, int, str | None]] = []  # (when, status, Retry-After)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CommandFlow:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                response = self.tenant.call(self.api, "POST", "/api/whatsapp/reset", json={})
            except requests.RequestException:
                self.refused.append((time.time(), 0, None))
                continue
            if response.status_code == 202:
                self.accepted.append((time.time(), response.json()["command_id"]))
            else:
                self.refused.append((time.time(), response.status_code,
                                     response.headers.get("Retry-After")))


def test_a_primary_killed_under_load_is_a_restart_every_tenant_survives(
    group: SentinelGroup, sandbox: SandboxProcess, stack_env: dict[str, str],
    rclient: redis.Redis, start_worker: Callable[..., Worker], start_api: Callable[..., Api],
) -> None:
    api = start_api("api-sentinel")
    workers = [start_worker("s1"), start_worker("s2")]
    beat = Service("beat-sentinel", [sys.executable, "-m", "celery", "-A", "workers.app",
                                     "beat", "--loglevel", "INFO"], stack_env).start()
    try:
        tenants = [Tenant(api, f"sen-{uuid.uuid4().hex[:8]}") for _ in range(CONNECTED_TENANTS)]
        devices = {t.id: pair_and_connect(t, api, sandbox)["device"] for t in tenants}
        commanded = Tenant(api, f"cmd-{uuid.uuid4().hex[:8]}")
        flow = CommandFlow(commanded, api).start()
        wait_for(lambda: len(flow.accepted) >= 10, 10, "commands flowing")

        old = group.kill_primary()
        killed_at = time.time()
        group.wait_promoted(old)
        promoted_in = time.time() - killed_at
        # Redundancy back, as an operator restores it: until a replica acknowledges
        # them, the API answers writes 503 (REDIS_ACK_REPLICAS, 1 with Sentinel).
        group.restart_as_replica(old)

        def all_connected() -> bool:
            for t in tenants:
                response = t.call(api, "GET", "/api/whatsapp/status")
                if response.status_code != 200:
                    return False
                st = response.json()
                if st["state"] != "connected" or len(live_connections(sandbox, t.id)) != 1:
                    return False
            return True

        bound = promoted_in + LEASE_TTL_S + 5
        wait_for(all_connected, bound + 2, "every tenant connected again", interval=0.1)
        recovered_in = time.time() - killed_at
        for t in tenants:
            assert t.status(api)["device"] == devices[t.id], "the same device, resumed"

        # A new pairing after the failover works, once the replica acknowledges writes
        # again (its link up is not enough: it may still be catching up, and until then
        # the API's WAIT answers 503, as it must).
        wait_for(lambda: rclient.set("wa:test:redundant", "1")
                 and int(rclient.execute_command("WAIT", 1, 200)) >= 1, 20,
                 "the restarted replica to acknowledge writes")
        fresh = Tenant(api, f"new-{uuid.uuid4().hex[:8]}")
        pair_and_connect(fresh, api, sandbox)
        paired_after = time.time() - killed_at

        flow.stop()
        # Every accepted command runs or waits in its mailbox.
        wait_for(lambda: rclient.llen(keys.mailbox(commanded.id)) == 0
                 and rclient.llen(keys.inflight(commanded.id)) == 0, 20,
                 "the command mailbox to drain")
        ran = {m for w in workers for m in re.findall(rf"{commanded.id}: command reset \((c_\w+)\)",
                                                      w.log())}
        lost = [(at, cid) for at, cid in flow.accepted if cid not in ran]
        refusals = {(code, retry is not None) for _, code, retry in flow.refused}
        print(f"\nSentinel failover: promoted in {promoted_in:.2f} s; every tenant connected "
              f"again {recovered_in:.2f} s after the kill (bound {bound:.2f} s); a new "
              f"pairing connected {paired_after:.2f} s after it; commands accepted "
              f"{len(flow.accepted)}, refused {len(flow.refused)} {sorted(refusals)}, "
              f"lost {len(lost)}")

        assert recovered_in <= bound
        assert all(code == 503 and retry for code, retry in refusals if code), (
            "during the switch the API answers 503 with Retry-After, nothing else")
        assert flow.accepted[-1][0] > killed_at + promoted_in, "accepted again after it"
        # An accepted command had reached the replica (WAIT in its round trip): the
        # promotion cannot have lost it.
        assert lost == [], lost
        everyone = {t.id for t in tenants} | {fresh.id, commanded.id}
        assert [c for c in sandbox.conflicts() if c["tenant"] in everyone] == []
        removed = [c for tid in everyone for c in sandbox.connections(tid)
                   if c["end_reason"] == "device_removed"]
        assert removed == []
        for t in tenants:
            conns = sorted(sandbox.connections(t.id), key=lambda c: c["started_at"])
            for a, b in zip(conns, conns[1:], strict=False):
                assert a["ended_at"] is not None and a["ended_at"] <= b["started_at"], (
                    f"tenant {t.id}: two connections overlapped")
        # Nobody restarted anything by hand: workers and beat followed by themselves.
        assert beat.alive() and all(w.alive() for w in workers)
    finally:
        beat.stop()
