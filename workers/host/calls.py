"""The threads a connection host runs the worker's waited-on calls on (send, logout).

A call can block for as long as the adapter lets it (a send waits for the server's
answer), so no call may wait behind another: an idle thread takes the next call,
and a new one starts only when none is idle. Starting a thread per call cost the
host more CPU per message than the frame that carried it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class CallThreads:
    """Runs each submitted call at once on an idle daemon thread, or on a new one."""

    def __init__(self, name: str = "wa-host-call") -> None:
        self._name = name
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self.started = 0  # threads started so far (for the tests)

    def submit(self, call: Callable[[], None]) -> None:
        """Run ``call`` now; it must not raise (it reports its own outcome)."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # claimed: the next submit cannot count on it
                spawn = False
            else:
                spawn, self.started = True, self.started + 1
        self._calls.put(call)
        if spawn:
            threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        while True:
            self._calls.get()()
            with self._lock:
                self._idle += 1
