"""Fixtures for the connection hosts: a sandbox network and a pool of real host processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shared.whatsapp.conftest import EventRecorder
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import pid_alive  # noqa: F401 - the host tests use it
from workers.host.pool import HostLimits, HostPool

#: An event sink tests wait on: the neonize adapter tests' own.
Events = EventRecorder


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess().start() as proc:
        yield proc


def sandbox_config(sandbox: SandboxProcess, store: Path) -> dict[str, str]:
    """A connection host's config for the sandbox adapter."""
    return {"backend": "sandbox", "sandbox_url": sandbox.url, "store": str(store),
            "log_level": "INFO", "log_format": "text", "client_id": "owner-1"}


def sandbox_pool(sandbox: SandboxProcess, store: Path, **limits: float) -> HostPool:
    """A pool of real connection hosts running the sandbox adapter."""
    return HostPool("sandbox", sandbox_config(sandbox, store),
                    HostLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture
def pool(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[HostPool]:
    hosts = sandbox_pool(sandbox, tmp_path / "store", sessions_per_host=2)
    try:
        yield hosts
    finally:
        hosts.shutdown()


# PostgreSQL (pgserver) and a closed local port, as the adapter's own tests use them.
from tests.shared.whatsapp.conftest import (  # noqa: E402, F401
    closed_port_proxy,
    postgres_admin_url,
    postgres_url,
)
