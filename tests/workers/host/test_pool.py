"""Connection hosts as the worker uses them, on the sandbox: real host processes, real sockets."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from workers.host.pool import HostPool
from workers.host.process import HostCallFailed

from .conftest import Events, pid_alive


def test_a_pairing_runs_in_a_host_and_its_close_ends_with_closed(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events)

    qr = events.wait_for(EventKind.QR)
    assert qr.data["index"] == 0 and qr.data["code"]
    [conn] = sandbox.live_connections("t1")
    assert conn["client"] == "owner-1"  # logged as its owner's, whichever host holds it
    assert session.host is not None and session.host.pid != os.getpid()

    session.close()
    events.wait_for(EventKind.CLOSED, timeout=3)
    assert session.wait_closed(0)
    wait_for(lambda: not sandbox.live_connections("t1"), 10, "the sandbox to see the socket close")


def test_killing_a_host_reopens_its_sessions_elsewhere(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events, lease_left=lambda: 10.0)
    events.wait_for(EventKind.QR)
    first = session.host
    assert first is not None

    os.kill(first.pid, signal.SIGKILL)

    assert events.wait_for(EventKind.DISCONNECTED).data["reason"] == "host_lost"
    assert events.wait_for(EventKind.QR).data["index"] == 0  # a fresh pairing
    assert session.host is not None and session.host.pid != first.pid
    assert sandbox.conflicts() == []
    session.close()
    events.wait_for(EventKind.CLOSED, timeout=3)


def test_a_send_with_no_host_holding_the_session_is_known_not_sent(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    """Between a host's death and the session's reopen (or once it is closing) nothing
    can take the message: the error says so (answered, not connected), so the owner
    puts the send back rather than record it 'unknown'."""
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events)
    events.wait_for(EventKind.QR)
    session.close()
    with pytest.raises(HostCallFailed) as failed:
        session.send_message("6281234567890@s.whatsapp.net", {"kind": "text", "text": "hi"})
    assert failed.value.answered and "not connected" in str(failed.value)
    events.wait_for(EventKind.CLOSED, timeout=3)


def test_a_session_whose_owner_lost_its_lease_is_not_reopened(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events, may_connect=lambda: False)
    events.wait_for(EventKind.CLOSED)  # the host asked may_connect before the dial: no
    assert not sandbox.connections("t1")
    assert session.wait_closed(0)


def test_a_close_the_host_cannot_confirm_kills_the_host(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events)
    events.wait_for(EventKind.QR)
    host = session.host
    assert host is not None
    os.kill(host.pid, signal.SIGSTOP)  # a close that hangs: the host cannot act on it

    started = time.monotonic()
    session.close()
    events.wait_for(EventKind.CLOSED, timeout=5)

    assert time.monotonic() - started < 3.0  # the 2 s bound plus the reap
    assert not pid_alive(host.pid)
    wait_for(lambda: not sandbox.live_connections("t1"), 10, "the sandbox to see the socket close")


def test_a_host_exits_by_itself_when_its_lease_window_passes(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    """The worker stops renewing (here: the lease says 1 s and never more)."""
    events = Events()
    left = [1.0]
    session = pool.open_session("t1", jid=None, on_event=events, lease_left=lambda: left[0],
                                may_connect=lambda: left[0] > 0)
    events.wait_for(EventKind.QR)
    host = session.host
    assert host is not None
    left[0] = 0.0  # renewals stop: the host keeps the window it was given

    wait_for(lambda: not pid_alive(host.pid), 3, "the host to exit by itself")
    assert host.wait_exited(3) and host.exit_code == 75
    events.wait_for(EventKind.CLOSED)  # the owner's lease is gone: no reopen
    assert not sandbox.live_connections("t1")


def test_sessions_fill_a_host_then_the_next(pool: HostPool) -> None:
    sinks = [Events() for _ in range(3)]
    sessions = [pool.open_session(f"t{i}", jid=None, on_event=sink)
                for i, sink in enumerate(sinks)]
    for sink in sinks:
        sink.wait_for(EventKind.QR)
    pids = [s.host.pid for s in sessions]  # type: ignore[union-attr]
    assert pids[0] == pids[1] != pids[2]  # two sessions per host in this pool
    for s in sessions:
        s.close()
    for sink in sinks:
        sink.wait_for(EventKind.CLOSED)


def test_killing_the_worker_leaves_no_host_behind(tmp_path, sandbox: SandboxProcess) -> None:  # type: ignore[no-untyped-def]
    """A worker process with hosts is killed with SIGKILL: its hosts see end-of-file."""
    import subprocess
    import sys
    script = (
        "import sys, time\n"
        "from tests.workers.host.conftest import sandbox_pool, Events\n"
        "from tests.support.sandbox_proc import SandboxProcess\n"
        "from pathlib import Path\n"
        "sb = SandboxProcess(); sb.port = int(sys.argv[1])\n"
        "pool = sandbox_pool(sb, Path(sys.argv[2]))\n"
        "ev = Events()\n"
        "s = pool.open_session('t1', jid=None, on_event=ev)\n"
        "from shared.whatsapp.port import EventKind\n"
        "ev.wait_for(EventKind.QR)\n"
        "print(' '.join(str(h['pid']) for h in pool.hosts()), flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, str(sandbox.port), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        pids = [int(p) for p in worker.stdout.readline().split()]
        assert pids and all(pid_alive(p) for p in pids)
        worker.kill()
        worker.wait()
        wait_for(lambda: not any(pid_alive(p) for p in pids), 2, "the hosts to exit")
        wait_for(lambda: not sandbox.live_connections("t1"), 2, "the socket to close")
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


def test_the_worker_process_never_loads_neonize(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker's backend for WA_BACKEND=neonize runs a real neonize session (a dial to a
    closed port) in a host; the worker process itself never imports neonize."""
    import subprocess
    import sys
    script = (
        "import socket, sys, threading\n"
        "import workers.app\n"
        "from shared.config import load_settings\n"
        "from workers.backends import build_backend\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "pool = build_backend(load_settings({'wa_backend': 'neonize', 'wa_store': sys.argv[1],\n"
        "    'wa_proxy': f'http://127.0.0.1:{port}'}, environ={}))\n"
        "done, kinds = threading.Event(), []\n"
        "def sink(ev):\n"
        "    kinds.append(ev.kind.value)\n"
        "    if ev.kind.value == 'closed': done.set()\n"
        "pool.open_session('t1', jid=None, on_event=sink)\n"
        "assert done.wait(20), kinds\n"
        "pool.shutdown()\n"
        "print(kinds, sorted(m for m in sys.modules if 'neonize' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['connect_failure', 'closed'] []"
    assert (tmp_path / "t1.sqlite3").is_file()  # the host made the store, as neonize does


class RecordingObserver:
    """A PoolObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def started(self) -> None:
        self.calls.append(("started", None))

    def ready(self, seconds: float) -> None:
        self.calls.append(("ready", seconds))

    def lost(self, reason: str) -> None:
        self.calls.append(("lost", reason))

    def counted(self, hosts: int, fullest: int) -> None:
        self.calls.append(("counted", (hosts, fullest)))

    def told(self, what: str) -> list[object]:
        return [arg for name, arg in self.calls if name == what]


def test_the_pool_tells_its_observer_of_starts_readiness_counts_and_losses(
        sandbox: SandboxProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The host metrics hang off a PoolObserver (PoolMetrics by default), not inline."""
    from .conftest import sandbox_config

    observer = RecordingObserver()
    pool = HostPool("sandbox", sandbox_config(sandbox, tmp_path / "store"),
                    observer=observer)
    try:
        events = Events()
        session = pool.open_session("t1", jid=None, on_event=events, lease_left=lambda: 10.0)
        events.wait_for(EventKind.QR)
        assert session.host is not None
        wait_for(lambda: observer.told("ready"), 5, "the host's ready reported")
        assert observer.told("started") and all(
            isinstance(s, float) and s > 0 for s in observer.told("ready"))
        wait_for(lambda: (1, 1) in observer.told("counted")
                 or (2, 1) in observer.told("counted"), 5, "a count with the session")
        os.kill(session.host.pid, signal.SIGKILL)
        wait_for(lambda: "exited" in observer.told("lost"), 5, "the loss reported")
        events.wait_for(EventKind.QR)  # reopened in another host
        session.close()
        events.wait_for(EventKind.CLOSED, timeout=3)
    finally:
        pool.shutdown()
    assert observer.told("lost") == ["exited"], "a shutdown is not a loss"


def test_a_send_to_a_host_already_killed_is_known_not_sent(
        pool: HostPool, sandbox: SandboxProcess) -> None:
    """After a host is killed and before its sessions move (its exit is reaped), a send
    must not hand anything over nor end 'unknown': the host can never act on it. A
    chaos run showed a second 'unknown' for one tenant in one host_stop from this."""
    events = Events()
    session = pool.open_session("t1", jid=None, on_event=events, lease_left=lambda: 10.0)
    events.wait_for(EventKind.QR)
    host = session.host
    assert host is not None
    os.kill(host.pid, signal.SIGSTOP)  # its exit is not reaped before the send below
    host.kill("the test's kill")
    with pytest.raises(HostCallFailed) as failed:
        host.call({"op": "send", "sid": session.sid, "chat": "6281234567890@s.whatsapp.net",
                   "content": {"kind": "text", "text": "hi"}}, threading.Event())
    assert failed.value.answered and "not connected" in str(failed.value)
    events.wait_for(EventKind.QR)  # reopened in another host
    session.close()
    events.wait_for(EventKind.CLOSED, timeout=3)
