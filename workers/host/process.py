"""One connection host as the worker sees it: the child process, its socket, its sessions."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shared.errors import WhatsAppError
from workers.host.protocol import SEND_TIMEOUT_S, FrameWriter, read_frames

if TYPE_CHECKING:
    from workers.host.session import HostedSession

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
#: How the worker starts a host; tests may start a stand-in that wraps it.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "workers.host.child")


class HostCallFailed(WhatsAppError):
    """Raised when a connection host did not carry out a call the worker waits on.

    ``answered``: the outcome is known: the host replied with the error (the call ran
    and failed there), or the call never left the worker (no host held the session,
    or it was already killed); as opposed to no reply at all (the host died after
    the order was handed to it, or the answer did not come in time).
    """

    def __init__(self, message: str, *, answered: bool = False, **context: object) -> None:
        super().__init__(message, **context)
        self.answered = answered


class HostProcess:
    """A running connection host. Its reader thread turns frames into ``on_frame`` calls
    and, at end-of-file, reaps the process and calls ``on_exit`` once."""

    def __init__(
        self,
        number: int,
        config: dict[str, Any],
        *,
        on_frame: Callable[[HostProcess, dict[str, Any]], None],
        on_exit: Callable[[HostProcess], None],
        command: Sequence[str] = DEFAULT_COMMAND,
    ) -> None:
        self.number = number
        self.sessions: dict[str, HostedSession] = {}  # sid -> session; the pool's lock guards it
        self.retiring = False  # takes no new session
        self.kill_reason = ""
        self.stats: dict[str, int] = {}
        self.baseline: dict[str, int] | None = None  # the first stats, before any session
        self.opens = 0  # sessions placed on it, ever
        self.started = time.monotonic()
        self.empty_since: float | None = self.started
        self.last_heard = self.started
        self.ready_at: float | None = None
        self.exit_code: int | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.settimeout(SEND_TIMEOUT_S)
        try:
            # A new session: the terminal's Ctrl-C goes to the worker, which hands its
            # sessions over; the host ends when the worker's end of the socket closes.
            self.proc = subprocess.Popen(
                [*command, "--fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self._sock = ours
        self._out = FrameWriter(
            ours, on_broken=lambda: self.kill("its socket stopped taking frames"))
        self._on_frame = on_frame
        self._calls: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._calls_lock = threading.Lock()
        self._next_call = 0
        self._on_exit = on_exit
        self.send({"op": "config", **config})
        self._reader = threading.Thread(target=self._read, name=f"wa-host-{number}-reader",
                                        daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.exit_code is None and not self.kill_reason

    def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False if the host is gone or its link broke (it is then killed)."""
        return self._out.send(frame)

    def call(self, frame: dict[str, Any], stopping: threading.Event) -> dict[str, Any]:
        """Send an order the worker waits on (``logout``, ``delete_store``) and wait for
        its ``reply``; raises HostCallFailed if it failed, the host died, or no answer came."""
        with self._calls_lock:
            self._next_call += 1
            req = str(self._next_call)
            done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
            self._calls[req] = done
        try:
            # A host already killed, or whose link broke before the whole frame was
            # written, can never act on the order: its outcome is known, not done.
            # Answered and "not connected", so a send waits for the session's reopen
            # instead of ending 'unknown' (one unknown per host death, at most).
            if not self.alive or not self.send({**frame, "req": req}):
                raise HostCallFailed(f"{frame['op']}: not connected (the connection host "
                                     "is gone; nothing was handed to it)", answered=True)
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while not done[0].wait(0.2):
                if not self.alive:
                    raise HostCallFailed(f"{frame['op']}: the connection host is gone")
                if stopping.is_set():
                    raise HostCallFailed(f"{frame['op']}: the worker is stopping")
                if time.monotonic() > deadline:
                    raise HostCallFailed(f"{frame['op']}: no answer in {CALL_TIMEOUT_S:.0f} s")
        finally:
            with self._calls_lock:
                self._calls.pop(req, None)
        reply = done[1][0] if done[1] else {}
        if reply.get("error"):
            raise HostCallFailed(f"{frame['op']} failed in the connection host: {reply['error']}",
                                 answered=True)
        return reply

    def _answered(self, frame: dict[str, Any]) -> None:
        with self._calls_lock:
            waiting = self._calls.get(str(frame.get("req")))
        if waiting is not None:
            waiting[1].append(frame)
            waiting[0].set()

    def kill(self, reason: str, *, expected: bool = False) -> None:
        """SIGKILL the host: the kernel closes its sockets at once. Idempotent.

        ``expected``: the worker is stopping (logged as info, not as a fault).
        """
        if self.kill_reason or self.exit_code is not None:
            return
        self.kill_reason = reason
        log.log(logging.INFO if expected else logging.WARNING,
                "connection host %d (pid %d) killed: %s; %d session(s) on it",
                self.number, self.pid, reason, len(self.sessions))
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_exited(self, timeout: float | None = None) -> bool:
        """True once the host is reaped and its sessions were handed to ``on_exit``."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def _read(self) -> None:
        for frame in read_frames(self._sock):
            self.last_heard = time.monotonic()
            if frame.get("op") == "reply":
                self._answered(frame)
                continue
            try:
                self._on_frame(self, frame)
            except Exception:
                log.exception("connection host %d: frame %s failed", self.number, frame.get("op"))
        # End-of-file: the host's end closed, which the kernel does only as it exits.
        # Make sure, reap it, then let the pool move or end its sessions.
        if self.proc.poll() is None:
            try:
                self.exit_code = self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.kill("it closed its socket but did not exit")
                self.exit_code = self.proc.wait()
        else:
            self.exit_code = self.proc.returncode
        self._out.broken = True
        self._sock.close()
        try:
            self._on_exit(self)
        except Exception:
            log.exception("connection host %d: handling its exit failed", self.number)
