"""The real neonize adapter, offline: every dial goes to a closed port on 127.0.0.1."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from shared.errors import InvalidInput
from shared.whatsapp.neonize_adapter import NeonizeBackend
from shared.whatsapp.neonize_session import NeonizeSession
from shared.whatsapp.neonize_support import GATE, QuietClient, parse_jid, redact
from shared.whatsapp.port import EventKind, WaEvent

from .conftest import EventRecorder

JID = "6281234567890:28@s.whatsapp.net"
INSERT_DEVICE = (
    "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
    " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
    " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, business_name,"
    " push_name) VALUES (%s, 1, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, '', '', '')"
)


def fake_device(jid: str) -> tuple[object, ...]:
    """Parameters for INSERT_DEVICE: a linked device with random keys."""
    key, sig = (lambda: os.urandom(32)), (lambda: os.urandom(64))
    return (jid, key(), key(), key(), sig(), key(), b"", sig(), key(), sig())


def kinds(events: list) -> list[EventKind]:
    """The kinds of a list of events, in order."""
    return [event.kind for event in events]


def sqlite_tables(path: Path) -> set[str]:
    """Names of the tables in a SQLite file."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_pairing_creates_store_and_reports_dial_failure_then_closed(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    store = tmp_path / "store"
    backend = NeonizeBackend(str(store), proxy=closed_port_proxy)

    session = backend.open_session("t1", jid=None, on_event=recorder)
    events = recorder.until_closed()

    assert session.wait_closed(timeout=10)
    assert kinds(events) == [EventKind.CONNECT_FAILURE, EventKind.CLOSED]
    assert events[0].data["reason"] == "dial"
    assert "127.0.0.1" in events[0].data["message"]
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert "whatsmeow_device" in sqlite_tables(store / "t1.sqlite3")
    assert not any(t.name.startswith("wa-neonize-") for t in threading.enumerate())


def test_two_tenants_get_two_store_files(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    other = EventRecorder()

    first = backend.open_session("alpha", jid=None, on_event=recorder)
    second = backend.open_session("beta", jid=None, on_event=other)
    recorder.until_closed()
    other.until_closed()

    assert first.wait_closed(10) and second.wait_closed(10)
    assert sorted(p.name for p in tmp_path.glob("*.sqlite3")) == [
        "alpha.sqlite3",
        "beta.sqlite3",
    ]


def test_many_tenants_at_once_all_close(tmp_path: Path, closed_port_proxy: str) -> None:
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    recorders = {f"t{i}": EventRecorder() for i in range(8)}

    sessions = [backend.open_session(t, jid=None, on_event=r) for t, r in recorders.items()]

    for recorder in recorders.values():
        assert kinds(recorder.until_closed()) == [EventKind.CONNECT_FAILURE, EventKind.CLOSED]
    assert all(session.wait_closed(10) for session in sessions)


def test_resume_with_jid_not_in_store_reports_logged_out_without_dialling(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    # Handing whatsmeow a JID its store lacks aborts the process (nil device);
    # the adapter checks the store first and reports the device as gone.
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    paired = EventRecorder()
    backend.open_session("t1", jid=None, on_event=paired).wait_closed(10)

    session = backend.open_session("t1", jid=JID, on_event=recorder)
    events = recorder.until_closed()

    assert session.wait_closed(10)
    assert kinds(events) == [EventKind.LOGGED_OUT, EventKind.CLOSED]
    assert events[0].data == {"reason": "no_device", "on_connect": True}


def test_resume_of_a_stored_device_dials(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    backend.open_session("t1", jid=None, on_event=EventRecorder()).wait_closed(10)
    insert_device(tmp_path / "t1.sqlite3", JID)

    session = backend.open_session("t1", jid=JID, on_event=recorder)
    events = recorder.until_closed()

    assert session.wait_closed(10)
    assert kinds(events) == [EventKind.CONNECT_FAILURE, EventKind.CLOSED]
    assert events[0].data["reason"] == "dial"


def insert_device(path: Path, jid: str) -> None:
    """Store a fake linked device (random keys) so whatsmeow has something to resume."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(INSERT_DEVICE.replace("%s", "?"), fake_device(jid))
    finally:
        conn.close()


def test_postgres_store_gets_whatsmeow_tables_and_dial_failure(
    postgres_url: str,
    closed_port_proxy: str,
    recorder: EventRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    # neonize first tries the URL as a SQLite path; nothing may land in the cwd.
    monkeypatch.chdir(tmp_path)
    backend = NeonizeBackend(postgres_url, proxy=closed_port_proxy)

    session = backend.open_session("t1", jid=None, on_event=recorder)
    events = recorder.until_closed()

    assert session.wait_closed(10)
    assert kinds(events) == [EventKind.CONNECT_FAILURE, EventKind.CLOSED]
    assert events[0].data["reason"] == "dial"
    with psycopg.connect(postgres_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"whatsmeow_device", "whatsmeow_sessions", "whatsmeow_identity_keys"} <= tables
    assert list(tmp_path.iterdir()) == []


def test_postgres_delete_store_removes_only_that_device(
    postgres_url: str, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    import psycopg

    backend = NeonizeBackend(postgres_url, proxy=closed_port_proxy)
    backend.open_session("t1", jid=None, on_event=recorder).wait_closed(10)
    other = "6289999999999:3@s.whatsapp.net"
    with psycopg.connect(postgres_url) as conn:
        for jid in (JID, other):
            conn.execute(INSERT_DEVICE, fake_device(jid))
    assert backend.has_device("t1", JID)

    backend.delete_store("t1", jid=JID)

    assert not backend.has_device("t1", JID)
    assert backend.has_device("t2", other)


def test_close_of_a_blocked_session_returns_at_once_and_is_idempotent(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    # Another tenant's setup holds the call gate, so this session's thread is
    # blocked before it dials; close() must not wait for it, and must end it.
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy, setup_hold=30)
    blocker = object()
    GATE.enter(blocker, hold=30)
    try:
        session = backend.open_session("t1", jid=None, on_event=recorder)
        assert not session.wait_closed(timeout=0.3)
        started = time.monotonic()
        session.close()
        session.close()
        assert time.monotonic() - started < 1.0
    finally:
        GATE.leave(blocker)
    events = recorder.until_closed()

    assert session.wait_closed(10)
    session.close()  # after the end: a no-op, and no stray events
    assert kinds(events) == [EventKind.CLOSED]
    assert kinds(recorder.events) == [EventKind.CLOSED]


def test_a_sink_that_raises_does_not_break_the_session(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    def failing_sink(event: WaEvent) -> None:
        recorder(event)
        raise RuntimeError("sink broke")

    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    session = backend.open_session("t1", jid=None, on_event=failing_sink)

    assert kinds(recorder.until_closed()) == [EventKind.CONNECT_FAILURE, EventKind.CLOSED]
    assert session.wait_closed(10)


def test_delete_store_removes_the_files(
    tmp_path: Path, closed_port_proxy: str, recorder: EventRecorder
) -> None:
    backend = NeonizeBackend(str(tmp_path), proxy=closed_port_proxy)
    backend.open_session("t1", jid=None, on_event=recorder).wait_closed(10)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"t1.sqlite3{suffix}").write_bytes(b"")
    (tmp_path / "t2.sqlite3").write_bytes(b"")

    backend.delete_store("t1")
    backend.delete_store("t1")  # idempotent

    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2.sqlite3"]


def test_tenant_names_that_are_not_file_names_are_refused(tmp_path: Path) -> None:
    backend = NeonizeBackend(str(tmp_path))

    for bad in ("../x", "", ".hidden", "a/b", "Upper", "a.b"):
        with pytest.raises(InvalidInput):
            backend.open_session(bad, jid=None, on_event=EventRecorder())


def test_jid_parsing_and_redaction() -> None:
    jid = parse_jid(JID)
    assert (jid.User, jid.Device, jid.Server) == ("6281234567890", 28, "s.whatsapp.net")
    message = 'proxyconnect tcp: "http://user:secret@10.0.0.1:3128" refused'
    assert "secret" not in redact(message)
    assert "10.0.0.1:3128" in redact(message)


def test_pair_code_without_a_connected_client_is_a_pair_code_failure(
    tmp_path: Path, recorder: EventRecorder
) -> None:
    """neonize's PairPhone needs a connected client; offline it must report, not crash."""
    backend = NeonizeBackend(str(tmp_path))
    session = NeonizeSession(backend, "t1", None, backend.database("t1"), recorder)
    session.request_pair_code("6281234567890")  # no client yet: refused at once
    client = QuietClient(backend.database("t1"), uuid="t1", new_device=True)
    client._stop_finalizer.detach()
    session._pair_phone(client, "6281234567890")  # the Go side answers "client is nil"
    assert [(e.kind, e.data["reason"]) for e in recorder.events] == [
        (EventKind.CONNECT_FAILURE, "pair_code")] * 2
    assert all("6281234567890" not in e.data["message"] for e in recorder.events)
