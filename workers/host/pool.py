"""The worker's connection hosts: placing sessions, renewing their windows, containing faults.

``HostPool`` is the worker's ``WhatsAppBackend``. It starts hosts as sessions
need them (``sessions_per_host`` each, one spare kept warm) and runs one
maintenance thread that

- passes each session's self-fence time to its host after lease renewals;
- kills a host whose close is not confirmed within ``close_timeout_s``, that
  has been silent for ``SILENT_HOST_S``, or whose descriptors or threads pass
  their bound; a host over its store-open budget takes no new session and is
  killed once empty;
- opens again, in another host, the sessions of a host that died while their
  owner still holds the lease (after ``REOPEN_DELAY_S``, so the server has seen
  the dead sockets close), and delivers ``CLOSED`` for the others.

Over 300 lines: placement, window renewal and fault containment are one maintenance
thread's schedule over the same hosts, and each step reads what the others keep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.whatsapp.port import EventKind, EventSink, WaEvent
from workers.host.dispatch import EventDispatcher
from workers.host.health import HostView, judge
from workers.host.observers import PoolMetrics, PoolObserver
from workers.host.process import DEFAULT_COMMAND, HostCallFailed, HostProcess
from workers.host.session import HostedSession

log = logging.getLogger(__name__)

TICK_S = 0.1
RENEW_EVERY_S = 0.5
REOPEN_DELAY_S = 0.2
@dataclass(frozen=True)
class HostLimits:
    """How many sessions a host holds, and when it is recycled."""

    sessions_per_host: int = 500
    close_timeout_s: float = 2.0
    max_store_opens: int = 0  # 0: no budget (SQLite, sandbox)


class HostPool:
    """Connection hosts of one worker, behind the port's ``WhatsAppBackend``."""

    def __init__(self, name: str, config: dict[str, Any], limits: HostLimits | None = None,
                 *, command: Sequence[str] = DEFAULT_COMMAND,
                 observer: PoolObserver | None = None) -> None:
        self.name = name
        self._observer = observer or PoolMetrics()
        self.limits = limits or HostLimits()
        self._config = config
        self._command = tuple(command)
        self._lock = threading.RLock()
        self._hosts: list[HostProcess] = []
        self._numbers = 0
        self._reopen: list[tuple[float, HostedSession]] = []
        self._stopping = threading.Event()
        self._events = EventDispatcher()
        self._next_renew = 0.0
        self.recycled = 0
        self._thread = threading.Thread(target=self._run, name="wa-host-pool", daemon=True)
        self._thread.start()
        with self._lock:
            self._spawn()  # warm: the first pairing does not wait for a host to start

    # --- the port -----------------------------------------------------------
    def open_session(self, tenant: str, *, jid: str | None, on_event: EventSink,
                     may_connect: Callable[[], bool] | None = None,
                     lease_left: Callable[[], float | None] | None = None) -> HostedSession:
        """Open a client for ``tenant`` in a host with room; returns at once."""
        session = HostedSession(self, tenant, jid, on_event, may_connect, lease_left)
        with self._lock:
            self._place(session)
        return session

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None:
        """Remove the tenant's stored keys (in a host: the worker loads no WhatsApp library)."""
        with self._lock:
            host = self._host_with_room() or self._spawn()
        host.call({"op": "delete_store", "tenant": tenant, "jid": jid or ""}, self._stopping)

    def shutdown(self) -> None:
        """Kill every host (after the owners closed their sessions) and stop."""
        self._stopping.set()
        with self._lock:
            hosts = list(self._hosts)
        for host in hosts:
            host.kill("the worker is stopping", expected=True)
        for host in hosts:
            host.wait_exited(5.0)
        self._thread.join(2.0)

    # --- what sessions ask of the pool -------------------------------------
    def close(self, session: HostedSession) -> None:
        with self._lock:
            if session.closing:
                return
            session.closing = True
            host = session.host
            if host is None:  # waiting to reopen: nothing holds a socket
                self._reopen = [(t, s) for t, s in self._reopen if s is not session]
                self.deliver(session, WaEvent(EventKind.CLOSED, {}))
                return
            session.close_by = time.monotonic() + self.limits.close_timeout_s
        host.send({"op": "close", "sid": session.sid})

    def logout(self, session: HostedSession) -> None:
        with self._lock:
            host = session.host
        if host is None:
            raise HostCallFailed(f"tenant {session.tenant}: no live client to log out")
        host.call({"op": "logout", "sid": session.sid}, self._stopping)

    def send_message(self, session: HostedSession, chat: str,
                     content: dict[str, Any]) -> str:
        with self._lock:
            host = session.host
        if host is None or session.closing:
            # Nothing was handed to any host (the one it was on died and the reopen is
            # due, or it is closing): the outcome is known, it was not sent. Answered,
            # and "not connected", so the send waits for the connection, not 'unknown'.
            raise HostCallFailed(f"tenant {session.tenant}: not connected (no live client "
                                 "to send with)", answered=True)
        reply = host.call({"op": "send", "sid": session.sid, "chat": chat, "content": content},
                          self._stopping)
        return str(reply.get("wa_message_id") or "")

    def send_order(self, session: HostedSession, frame: dict[str, Any]) -> bool:
        with self._lock:
            host = session.host
        return host is not None and not session.closing and host.send(frame)

    def deliver(self, session: HostedSession, event: WaEvent) -> None:
        """Queue an event for its owner; one session's events keep their order."""
        self._events.deliver(session, event)

    def on_dispatch_thread(self) -> bool:
        return self._events.on_own_thread()

    def hosts(self) -> list[dict[str, Any]]:
        """What each host holds and reports: for ``/health``, metrics and tests."""
        with self._lock:
            # The host's own report first: the worker's count of sessions wins.
            return [{**h.stats, "number": h.number, "pid": h.pid, "sessions": len(h.sessions),
                     "retiring": h.retiring, "alive": h.alive} for h in self._hosts]

    # --- placing ------------------------------------------------------------
    def _host_with_room(self) -> HostProcess | None:
        room = [h for h in self._hosts if h.alive and not h.retiring
                and len(h.sessions) < self.limits.sessions_per_host]
        # Fill the fullest first: fewer processes, and a spare stays empty and warm.
        return max(room, key=lambda h: len(h.sessions)) if room else None

    def _spawn(self) -> HostProcess:
        self._numbers += 1
        host = HostProcess(self._numbers, self._config, on_frame=self._on_frame,
                           on_exit=self._on_exit, command=self._command)
        self._hosts.append(host)
        self._observer.started()
        log.info("connection host %d started (pid %d)", host.number, host.pid)
        return host

    def _place(self, session: HostedSession) -> None:
        until = self._until(session)
        if (session.may_connect is not None and not session.may_connect()) or (
                until is not None and until <= time.monotonic()):
            # The owner's lease may be gone: never dial (and never hand a host a window
            # that has already passed, which it would take for a worker gone silent).
            session.closing = True
            self.deliver(session, WaEvent(EventKind.CLOSED, {}))
            return
        host = self._host_with_room() or self._spawn()
        session.host = host
        host.sessions[session.sid] = session
        host.opens += 1
        host.empty_since = None
        if self.limits.max_store_opens and host.opens >= self.limits.max_store_opens:
            host.retiring = True  # its store-open budget is used: no further session
        session.sent_until = until or 0.0
        host.send({"op": "open", "sid": session.sid, "tenant": session.tenant,
                   "jid": session.jid, "until": until})

    def _until(self, session: HostedSession) -> float | None:
        """The CLOCK_MONOTONIC time after which the owner would self-fence the session."""
        if session.lease_left is None:
            return None
        left = session.lease_left()
        return time.monotonic() + max(0.0, left) if left is not None else None

    # --- frames from hosts --------------------------------------------------
    def _on_frame(self, host: HostProcess, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "event":
            with self._lock:
                session = host.sessions.get(str(frame.get("sid")))
                kind = EventKind(frame["kind"])
                if session is not None and kind is EventKind.CLOSED:
                    del host.sessions[session.sid]
                    if not host.sessions:
                        host.empty_since = time.monotonic()
            if session is not None:
                self.deliver(session, WaEvent(kind, dict(frame.get("data") or {})))
        elif op == "stats":
            host.stats = {k: int(v) for k, v in frame.items() if k != "op"}
            if host.baseline is None and host.stats.get("opens") == 0:
                host.baseline = dict(host.stats)
        elif op == "ready":
            host.ready_at = time.monotonic()
            self._observer.ready(host.ready_at - host.started)

    def _on_exit(self, host: HostProcess) -> None:
        """A host is gone (reaped): its sockets are closed. Move or end its sessions."""
        reason = host.kill_reason or f"exited with code {host.exit_code}"
        with self._lock:
            if host in self._hosts:
                self._hosts.remove(host)
            sessions = list(host.sessions.values())
            host.sessions.clear()
            moved = 0
            for session in sessions:
                session.host = None
                if session.closing or self._stopping.is_set():
                    self.deliver(session, WaEvent(EventKind.CLOSED, {}))
                else:
                    moved += 1
                    self._reopen.append((time.monotonic() + REOPEN_DELAY_S, session))
        if self._stopping.is_set():
            return
        if not host.kill_reason:
            self._observer.lost("exited")
        log.warning("connection host %d (pid %d) is gone (%s): %d session(s) reopen elsewhere, "
                    "%d were closing", host.number, host.pid, reason, moved, len(sessions) - moved)

    # --- maintenance ----------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("connection host maintenance failed")

    def tick(self) -> None:
        """One round: bounds, silence, close deadlines, reopens, renewals, the spare."""
        now = time.monotonic()
        with self._lock:
            hosts = list(self._hosts)
        for host in hosts:
            self._check(host, now)
        self._reopen_due(now)
        if now >= self._next_renew:
            self._next_renew = now + RENEW_EVERY_S
            for host in hosts:
                self._renew(host)
        with self._lock:
            if not self._stopping.is_set() and self._host_with_room() is None:
                self._spawn()
            self._observer.counted(len(self._hosts),
                                   max((len(h.sessions) for h in self._hosts), default=0))

    def _check(self, host: HostProcess, now: float) -> None:
        if not host.alive:
            return
        with self._lock:
            view = HostView(
                now=now, sessions=len(host.sessions),
                overdue_closes=sum(s.close_by is not None and now > s.close_by
                                   for s in host.sessions.values()),
                last_heard=host.last_heard, stats=host.stats, baseline=host.baseline,
                opens=host.opens, empty_since=host.empty_since, retiring=host.retiring)
        verdict = judge(view, close_timeout_s=self.limits.close_timeout_s,
                        max_store_opens=self.limits.max_store_opens)
        if verdict is not None:
            self._observer.lost(verdict.reason)
            self.recycled += verdict.reason == "recycled"
            host.kill(verdict.detail)

    def _reopen_due(self, now: float) -> None:
        with self._lock:
            due = [s for t, s in self._reopen if t <= now]
            self._reopen = [(t, s) for t, s in self._reopen if t > now]
        for session in due:
            wanted = not session.closing and (session.may_connect is None
                                              or session.may_connect())
            if not wanted:
                with self._lock:
                    session.closing = True
                self.deliver(session, WaEvent(EventKind.CLOSED, {}))
                continue
            session.reopens += 1
            self.deliver(session, WaEvent(EventKind.DISCONNECTED, {"reason": "host_lost"}))
            with self._lock:
                if not session.closing:
                    self._place(session)

    def _renew(self, host: HostProcess) -> None:
        untils: dict[str, float] = {}
        with self._lock:
            sessions = [s for s in host.sessions.values() if not s.closing]
        for session in sessions:
            until = self._until(session)
            # Only later, never earlier: a fenced session closes by its own order.
            if until is not None and until > session.sent_until + RENEW_EVERY_S / 2:
                session.sent_until = until
                untils[session.sid] = int(until * 1000) / 1000  # never later than it is
        if untils:
            host.send({"op": "until", "sids": untils})
