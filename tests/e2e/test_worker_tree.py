"""A worker's process tree: its connection hosts hold the sockets and die with it."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Tenant, live_connections, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker, pid_alive

pytestmark = pytest.mark.slow


def test_kill_9_of_a_worker_leaves_no_process_of_its_tree_after_2_s(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    api = start_api("api-tree")
    worker = start_worker("tree1")
    assert worker.proc is not None
    tenant = Tenant(api, f"tree-{uuid.uuid4().hex[:10]}")
    pair_and_connect(tenant, api, sandbox)
    hosts = worker.host_pids()
    assert hosts, "the worker holds its clients in connection hosts"
    [conn] = live_connections(sandbox, tenant.id)
    # Logged as the worker's connection, though a host holds the socket.
    assert conn["client"] == f"{socket.gethostname()}:{worker.proc.pid}"

    os.kill(worker.proc.pid, signal.SIGKILL)  # the worker alone, not its process group
    killed_at = time.monotonic()
    worker.proc.wait(5)

    def gone() -> bool:
        return not any(pid_alive(pid) for pid in hosts)

    wait_for(gone, 2, "the worker's connection hosts to exit")
    assert time.monotonic() - killed_at < 2.0
    wait_for(lambda: not live_connections(sandbox, tenant.id), 2, "the socket to close")

