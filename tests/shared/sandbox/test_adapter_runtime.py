"""The adapter's shared runtime: one I/O loop for every session, events in order per tenant."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import pytest

from shared.limits import raise_open_files_limit
from shared.whatsapp.port import EventKind
from shared.whatsapp.sandbox_adapter import SandboxBackend, _Runtime, live_sessions
from tests.shared.sandbox.test_adapter import WAIT, Recorder
from tests.support.sandbox_proc import SandboxProcess


@pytest.fixture
def backend(sandbox: SandboxProcess, tmp_path: Path) -> SandboxBackend:
    return SandboxBackend(sandbox.url, tmp_path / "store")


def test_many_sessions_share_one_loop_and_end_cleanly(backend):
    backend.open_session("warm-up", jid=None, on_event=Recorder()).close()
    threads_before = threading.active_count()
    recorders = [Recorder() for _ in range(30)]
    sessions = [backend.open_session(f"t{i}", jid=None, on_event=r)
                for i, r in enumerate(recorders)]
    for r in recorders:
        assert r.next().kind is EventKind.QR
    assert threading.active_count() == threads_before, "no thread per session"
    for s in sessions:
        s.close()
    for r, s in zip(recorders, sessions, strict=True):
        assert r.until(EventKind.CLOSED)[-1].kind is EventKind.CLOSED
        assert s.wait_closed(WAIT)
    assert live_sessions() == 0


def test_close_before_the_session_started_still_ends_with_one_closed(backend):
    for i in range(20):
        events = Recorder()
        session = backend.open_session(f"early{i}", jid=None, on_event=events)
        session.close()
        assert session.wait_closed(WAIT)
        assert [e.kind for e in events.until(EventKind.CLOSED)][-1] is EventKind.CLOSED
        assert events.events.empty()


def test_a_blocked_handler_stalls_neither_other_tenants_nor_the_sockets(backend):
    runtime = _Runtime.get()
    slow, fast = "slow0", next(f"fast{i}" for i in range(100)
                               if runtime.shard_for(f"fast{i}") != runtime.shard_for("slow0"))
    release, seen_in_handler = threading.Event(), []

    def blocking(event):
        if event.kind is EventKind.QR:
            release.wait(WAIT)  # a handler stuck on Redis
        if event.kind is not EventKind.CLOSED:
            seen_in_handler.append(slow_session.wait_closed(0))  # never blocks here

    slow_session = backend.open_session(slow, jid=None, on_event=blocking)
    fast_events = Recorder()
    fast_session = backend.open_session(fast, jid=None, on_event=fast_events)
    assert fast_events.next().kind is EventKind.QR
    release.set()
    for session in (slow_session, fast_session):
        session.close()
        assert session.wait_closed(WAIT)
    assert seen_in_handler == [False]


def test_open_files_soft_limit_is_raised_up_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_open_files_limit(wanted=min(4096, hard))
        assert got == min(4096, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_resume_closed_at_once_still_reaches_the_server_and_replaces_the_older_one(
    backend, sandbox
):
    from tests.shared.sandbox.test_adapter import pair

    old, old_events, jid = pair(backend, sandbox, "acme")
    for _ in range(5):  # closed before, during or after its dial: always announced
        events = Recorder()
        backend.open_session("acme", jid=jid, on_event=events).close()
        # CONNECTED only if the loop got the server's answer before close() was called
        # (a busy machine can delay this thread that long); never a failure or a drop.
        assert [e.kind for e in events.until(EventKind.CLOSED)] in (
            [EventKind.CLOSED], [EventKind.CONNECTED, EventKind.CLOSED])
    assert old_events.kinds(2) == [EventKind.STREAM_REPLACED, EventKind.CLOSED]
    assert old.wait_closed(WAIT)
    rows = [r for r in sandbox.connections("acme") if r["mode"] == "resume"]
    assert len(rows) == 6 and rows[0]["end_reason"] == "stream_replaced"
    assert sandbox.live_connections("acme") == []
