"""Fixtures for the neonize adapter: a closed local port to dial, a private PostgreSQL."""

from __future__ import annotations

import logging
import os
import queue
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.whatsapp.port import EventKind, WaEvent


class EventRecorder:
    """An event sink that queues what a session reports, for tests to wait on."""

    def __init__(self) -> None:
        self.events: list[WaEvent] = []
        self._queue: queue.Queue[WaEvent] = queue.Queue()

    def __call__(self, event: WaEvent) -> None:
        self.events.append(event)
        self._queue.put(event)

    def wait_for(self, kind: EventKind, timeout: float = 10.0) -> WaEvent:
        """The next event of ``kind`` (the ones before it stay in ``events``)."""
        while True:
            event = self._queue.get(timeout=timeout)
            if event.kind is kind:
                return event

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    def until_closed(self, timeout: float = 15.0) -> list[WaEvent]:
        """Wait for CLOSED and return every event seen so far."""
        while True:
            event = self._queue.get(timeout=timeout)
            if event.kind is EventKind.CLOSED:
                return list(self.events)


@pytest.fixture
def recorder() -> EventRecorder:
    """A fresh event sink."""
    return EventRecorder()


@pytest.fixture
def closed_port_proxy() -> str:
    """An HTTP proxy URL on 127.0.0.1 where nothing listens: the dial fails locally."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_session_threads_left() -> Iterator[None]:
    """Fail a test that leaves a ``wa-neonize-*`` thread running."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("wa-neonize-")]
    assert left == [], f"session threads still alive: {left}"


def _private_postgres() -> Iterator[str]:
    """Start pgserver on a Unix socket in a temp dir; yield its admin URL; stop it."""
    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        import pgserver
    # Its atexit hook logs at INFO through the root handler neonize installed at
    # import, whose stream pytest has closed by then.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="wapair-pg-") as pgdata:
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as e:  # noqa: BLE001 - any failure to start means skip
            pytest.skip(f"pgserver could not start a private PostgreSQL: {e}")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL the tests may create databases in: WAPAIR_TEST_POSTGRES_URL or pgserver."""
    given = os.environ.get("WAPAIR_TEST_POSTGRES_URL")
    if given:
        yield given
    else:
        yield from _private_postgres()


@pytest.fixture
def postgres_url(postgres_admin_url: str, tmp_path: Path) -> str:
    """A fresh, empty database for one test, as a URL neonize accepts."""
    import psycopg

    name = f"wapair_{tmp_path.name.lower().replace('-', '_')}"[:60]
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(postgres_admin_url)._replace(path=f"/{name}"))
