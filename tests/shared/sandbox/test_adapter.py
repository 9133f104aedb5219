"""The sandbox adapter against a real sandbox process."""

from __future__ import annotations

import json
import logging
import queue
import stat
import threading
from pathlib import Path

import pytest

from shared.errors import ConfigError, InvalidInput
from shared.tenants import TENANT_ID
from shared.whatsapp.port import EventKind, WaEvent
from shared.whatsapp.sandbox_adapter import SandboxBackend, live_sessions
from tests.support.ports import free_port
from tests.support.sandbox_proc import SandboxProcess

WAIT = 5.0


class Recorder:
    """Collects a session's events; ``next()`` waits for the next one."""

    def __init__(self) -> None:
        self.events: queue.Queue[WaEvent] = queue.Queue()
        self.seen: list[WaEvent] = []

    def __call__(self, event: WaEvent) -> None:
        self.events.put(event)

    def next(self, timeout: float = WAIT) -> WaEvent:
        event = self.events.get(timeout=timeout)
        self.seen.append(event)
        return event

    def until(self, kind: EventKind, timeout: float = WAIT) -> list[WaEvent]:
        """Events up to and including the first of ``kind``."""
        got = []
        while not got or got[-1].kind is not kind:
            got.append(self.next(timeout))
        return got

    def kinds(self, count: int) -> list[EventKind]:
        return [self.next().kind for _ in range(count)]


@pytest.fixture
def backend(sandbox: SandboxProcess, tmp_path: Path) -> SandboxBackend:
    return SandboxBackend(sandbox.url, tmp_path / "store", ping_interval_s=0.2)


@pytest.fixture(autouse=True)
def no_sessions_left():
    yield
    assert live_sessions() == 0


def pair(backend: SandboxBackend, sandbox: SandboxProcess, tenant: str):
    """Pair through the adapter; returns (session, recorder, jid) with the session connected."""
    events = Recorder()
    session = backend.open_session(tenant, jid=None, on_event=events)
    qr = events.next()
    assert qr.kind is EventKind.QR and qr.data["index"] == 0
    jid = sandbox.scan(qr.data["code"])["jid"]
    assert events.kinds(2) == [EventKind.PAIR_SUCCESS, EventKind.CONNECTED]
    return session, events, jid


def test_pair_then_connected_with_keys_only_in_the_store(backend, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    session, events, jid = pair(backend, sandbox, "acme")
    first, success, connected = events.seen
    assert set(first.data) == {"code", "expires_in", "index"}
    assert success.data == {"jid": jid, "platform": "sandbox", "business_name": ""}
    assert connected.data == {"jid": jid}
    path = backend.store_path("acme")
    stored = json.loads(path.read_text())
    assert stored["jid"] == jid and len(stored["keys"]) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    session.close()
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)
    assert all(stored["keys"] not in json.dumps(e.data) for e in events.seen)
    assert stored["keys"] not in caplog.text
    modes = [(r["mode"], r["end_reason"]) for r in sandbox.connections("acme")]
    assert modes == [("pair", "pair_515"), ("resume", "client_closed")]


def test_resume_from_the_store_connects(backend, sandbox):
    first, _, jid = pair(backend, sandbox, "acme")
    first.close()
    assert first.wait_closed(WAIT)
    events = Recorder()
    session = backend.open_session("acme", jid=jid, on_event=events)
    assert events.next() == WaEvent(EventKind.CONNECTED, {"jid": jid})
    session.close()
    session.close()  # idempotent
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)
    assert events.events.empty()


def test_second_session_replaces_the_first_which_never_reconnects(backend, sandbox):
    first, first_events, jid = pair(backend, sandbox, "acme")
    second_events = Recorder()
    second = backend.open_session("acme", jid=jid, on_event=second_events)
    assert second_events.next().kind is EventKind.CONNECTED
    assert first_events.kinds(2) == [EventKind.STREAM_REPLACED, EventKind.CLOSED]
    assert first.wait_closed(WAIT)
    rows = [r for r in sandbox.connections("acme") if r["mode"] == "resume"]
    assert [r["end_reason"] for r in rows] == ["stream_replaced", None]
    assert [c["kind"] for c in sandbox.conflicts()] == ["same_device"]
    second.close()
    assert second.wait_closed(WAIT)


def test_dial_failure_is_reported_not_raised(tmp_path):
    backend = SandboxBackend(f"http://127.0.0.1:{free_port()}", tmp_path)
    events = Recorder()
    session = backend.open_session("acme", jid=None, on_event=events)
    failure = events.next()
    assert failure.kind is EventKind.CONNECT_FAILURE and failure.data["reason"] == "dial"
    assert isinstance(failure.data["message"], str)
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)


def test_resume_without_a_store_is_logged_out(backend):
    events = Recorder()
    session = backend.open_session("acme", jid="1:1@s.whatsapp.net", on_event=events)
    assert events.next() == WaEvent(EventKind.LOGGED_OUT, {"reason": "no_store",
                                                           "on_connect": True})
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)


def test_restarted_sandbox_disconnects_then_reconnects(backend, sandbox):
    session, events, jid = pair(backend, sandbox, "acme")
    sandbox.restart()
    assert events.next().kind is EventKind.DISCONNECTED
    assert events.next(timeout=10) == WaEvent(EventKind.CONNECTED, {"jid": jid})
    assert [r["end_reason"] for r in sandbox.connections("acme")][-2:] == ["server_restart", None]
    session.close()
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)


def test_phone_unlink_logs_out_and_deletes_the_store(backend, sandbox):
    session, events, jid = pair(backend, sandbox, "acme")
    sandbox.unlink(jid)
    assert events.next() == WaEvent(EventKind.LOGGED_OUT, {"reason": 401, "on_connect": False,
                                                           "detail": "unlinked"})
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)
    assert not backend.store_path("acme").exists()


def test_logout_unlinks_on_the_server_and_deletes_the_store(backend, sandbox):
    session, events, jid = pair(backend, sandbox, "acme")
    session.logout()
    assert events.until(EventKind.CLOSED)[-2].kind is EventKind.LOGGED_OUT
    assert session.wait_closed(WAIT)
    assert not backend.store_path("acme").exists()
    assert sandbox.connections("acme")[-1]["end_reason"] == "logout"
    assert sandbox.request("POST", "/phone/unlink", {"jid": jid}).status_code == 404


def test_pairing_timeout_is_final(backend):
    events = Recorder()
    session = backend.open_session("slow", jid=None, on_event=events)
    got = events.until(EventKind.CLOSED)
    assert [e.kind for e in got] == [EventKind.QR] * 3 + [EventKind.PAIRING_TIMEOUT,
                                                          EventKind.CLOSED]
    assert session.wait_closed(WAIT)


def test_slow_pongs_raise_keepalive_timeout_then_restored(backend, sandbox):
    session, events, _ = pair(backend, sandbox, "acme")
    sandbox.control(latency_s=0.5)
    timeout = events.next()
    assert timeout.kind is EventKind.KEEPALIVE_TIMEOUT and timeout.data == {"error_count": 1}
    sandbox.control(latency_s=0)
    assert events.until(EventKind.KEEPALIVE_RESTORED)[-1].kind is EventKind.KEEPALIVE_RESTORED
    session.close()
    assert events.until(EventKind.CLOSED)
    assert session.wait_closed(WAIT)


def test_bad_tenant_ids_never_reach_the_filesystem(backend):
    with pytest.raises(InvalidInput):
        backend.open_session("../etc", jid=None, on_event=Recorder())


def test_two_devices_of_one_account_get_the_newest_removed(backend, sandbox, tmp_path):
    old, old_events, old_jid = pair(backend, sandbox, "acme")
    other = SandboxBackend(sandbox.url, tmp_path / "other-worker")  # a second worker's store
    new, new_events, new_jid = pair(other, sandbox, "acme")
    assert new_events.next() == WaEvent(EventKind.LOGGED_OUT, {"reason": 401,
                                                               "on_connect": False,
                                                               "detail": "device_removed"})
    assert new_events.next().kind is EventKind.CLOSED
    assert not other.store_path("acme").exists() and backend.store_path("acme").exists()
    assert "same_account" in [c["kind"] for c in sandbox.conflicts()]
    old.close()
    assert old_events.until(EventKind.CLOSED)[0].kind is EventKind.CLOSED
    assert old.wait_closed(WAIT) and new.wait_closed(WAIT)
    assert old_jid != new_jid


def test_temporary_ban_is_final(backend, sandbox):
    session, events, jid = pair(backend, sandbox, "acme")
    sandbox.ban(jid, expire_s=30, code=403)
    ban = events.next()
    assert ban.kind is EventKind.TEMPORARY_BAN and ban.data == {"code": 403, "expire_s": 30.0}
    assert events.next().kind is EventKind.CLOSED
    assert session.wait_closed(WAIT)


def test_a_session_whose_owner_says_no_never_dials(
    backend: SandboxBackend, sandbox: SandboxProcess
) -> None:
    """may_connect is asked before the dial: a paused owner that lost its lease never connects."""
    events = Recorder()
    asked = threading.Event()

    def may_connect() -> bool:
        asked.set()
        return False

    session = backend.open_session("guarded", jid=None, on_event=events, may_connect=may_connect)
    assert events.next().kind is EventKind.CLOSED
    assert asked.is_set() and session.wait_closed(WAIT)
    assert sandbox.connections("guarded") == []


def test_pair_code_after_the_first_qr_then_entering_it_connects(backend, sandbox):
    events = Recorder()
    session = backend.open_session("acme", jid=None, on_event=events)
    assert events.next().kind is EventKind.QR
    session.request_pair_code("6281234567890")
    code = events.until(EventKind.PAIR_CODE)[-1].data["code"]
    jid = sandbox.enter_code(code, "6281234567890")["jid"]
    assert [e.kind for e in events.until(EventKind.CONNECTED)][-2:] == [
        EventKind.PAIR_SUCCESS, EventKind.CONNECTED]
    assert backend.read_store("acme")["jid"] == jid
    session.request_pair_code("6281234567890")  # no longer pairing: refused, not raised
    refusal = events.until(EventKind.CONNECT_FAILURE)[-1]
    assert refusal.data["reason"] == "pair_code"
    session.close()
    assert session.wait_closed(WAIT)


def test_tenant_ids_outside_the_one_pattern_are_refused_with_a_typed_error(
    tmp_path: Path,
) -> None:
    backend = SandboxBackend(f"http://127.0.0.1:{free_port()}", tmp_path)
    for bad in ("../x", "", ".hidden", "a/b", "Upper", "a.b", "x" * 64):
        assert not TENANT_ID.fullmatch(bad)
        with pytest.raises(InvalidInput):
            backend.store_path(bad)
    assert backend.store_path("acme_1-x").name == "acme_1-x.sandbox.json"
    with pytest.raises(ConfigError):
        SandboxBackend("http://127.0.0.1", tmp_path)  # no port
