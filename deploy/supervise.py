"""Keep one Procfile process running: restart it when it exits, with a backoff.

``python deploy/supervise.py NAME -- COMMAND...`` runs COMMAND and, whenever it
exits, logs a line and starts it again after a delay that doubles from
``SUPERVISE_BACKOFF_S`` (1 s) up to 30 s, back to the start once a run has
lasted a minute; what compose's ``restart: unless-stopped`` or systemd's
``Restart=always`` do. honcho (``make run``) stops every process when one
exits, so each Procfile command is wrapped in this, and one crash (beat losing
Redis, say) no longer takes the whole local stack down.

SIGTERM or SIGINT (honcho's stop on Ctrl-C) is passed to COMMAND once, and this
exits when COMMAND has; COMMAND runs in a process group of its own so that a
signal to the group honcho started reaches it only through here, and it gets
SIGTERM if this process dies without passing one on.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

MAX_BACKOFF_S = 30.0
STEADY_AFTER_S = 60.0


def _die_with_parent() -> None:
    """In the child: SIGTERM when the supervisor dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def log(name: str, message: str) -> None:
    print(f"supervise[{name}]: {message}", file=sys.stderr, flush=True)


def supervise(name: str, command: list[str], first_backoff_s: float) -> int:
    """Run ``command`` until asked to stop; returns its last exit status."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            if child is not None and child.poll() is None:
                try:
                    os.killpg(child.pid, signum)  # the shell and what it started
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = first_backoff_s
    restarts = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, process_group=0, preexec_fn=_die_with_parent)
        rc = child.wait()
        if stopping.is_set():
            return rc
        ran = time.monotonic() - started
        if ran >= STEADY_AFTER_S:
            backoff = first_backoff_s
        restarts += 1
        log(name, f"exited with status {rc} after {ran:.1f} s; restart {restarts} "
                  f"in {backoff:.1f} s")
        if stopping.wait(backoff):
            return rc
        backoff = min(backoff * 2, MAX_BACKOFF_S)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: supervise.py NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    first = float(os.environ.get("SUPERVISE_BACKOFF_S", "1"))
    return supervise(argv[0], argv[2:], first)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
