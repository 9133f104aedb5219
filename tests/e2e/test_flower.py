"""Flower against a real worker: a finished task read back through its HTTP API, and
what an unauthenticated client gets (its /metrics and /healthcheck skip the auth)."""

from __future__ import annotations

import ast
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from shared.config import load_settings
from shared.taskqueue import KICK_TASK, create_celery, send_kick
from shared.tenants import TenantRegistry
from tests.support.ports import wait_for
from tests.support.services import Flower, Worker

pytestmark = pytest.mark.slow
PASSWORD = "flower-pass-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def flower(stack_env: dict[str, str]) -> Iterator[Flower]:
    proc = Flower(stack_env, "ops", PASSWORD).start()
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def _finished(flower: Flower, tenant: str) -> dict[str, Any] | None:
    response = requests.get(f"{flower.url}/api/tasks", params={"taskname": KICK_TASK},
                            auth=flower.auth, timeout=5)
    response.raise_for_status()
    for task in response.json().values():
        # The kick this test sent (hops 0), not one a worker passed on.
        if task.get("args") and ast.literal_eval(task["args"]) == [tenant] and (
                ast.literal_eval(task.get("kwargs") or "{}") == {"hops": 0}):
            return dict(task) if task["state"] == "SUCCESS" else None
    return None


def test_a_finished_task_reads_back_through_flowers_api(
    flower: Flower, start_worker: Callable[..., Worker], rclient: redis.Redis,
    stack_env: dict[str, str],
) -> None:
    worker = start_worker("fl1")
    tenant = f"flower-{uuid.uuid4().hex[:8]}"
    TenantRegistry(rclient).create(tenant)
    app = create_celery(load_settings(environ=stack_env))

    def sent_and_seen() -> dict[str, Any] | None:
        # Flower sees only events sent after its receiver connected: send until one lands.
        send_kick(app, tenant, None)
        return wait_for(lambda: _finished(flower, tenant), 3, "the kick in Flower",
                        interval=0.2)

    task = wait_for(sent_and_seen, 30, "a finished kick in Flower", interval=0.1)
    assert task["name"] == KICK_TASK and task["worker"] == worker.worker_id
    assert ast.literal_eval(task["kwargs"]) == {"hops": 0}
    assert ast.literal_eval(task["result"]) in ("claimed", "owner", "held", "grace", "passed")


def test_flower_without_credentials(flower: Flower) -> None:
    for path in ("/", "/api/tasks", "/api/workers", "/tasks"):
        assert requests.get(flower.url + path, timeout=5).status_code == 401, path
    wrong = requests.get(f"{flower.url}/api/tasks", auth=("ops", "wrong"), timeout=5)
    assert wrong.status_code == 401
    # Flower serves these two to anyone who can reach its port: task names and counts,
    # never task arguments. That is why it listens on 127.0.0.1 / an internal network only.
    assert requests.get(f"{flower.url}/healthcheck", timeout=5).text == "OK"
    metrics = requests.get(f"{flower.url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "flower-" not in metrics.text


def _outward_address() -> str | None:
    """This machine's non-loopback address, if it has one (UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_flower_is_not_reachable_from_another_interface(flower: Flower) -> None:
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{address}:{flower.port}/metrics", timeout=3)
