"""deploy/supervise.py under honcho, as `make run` runs it: a crashed process is
restarted (with a log line) while the others stay up; SIGINT stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.ports import wait_for
from tests.support.services import ROOT

pytestmark = pytest.mark.slow
# Each process writes its pid to a file when it starts, then sleeps.
SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"


def _pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_crashed_process_is_restarted_and_ctrl_c_stops_everything() -> None:
    work = Path(tempfile.mkdtemp(prefix="wapair-supervise-"))
    procfile = work / "Procfile"
    procfile.write_text("".join(
        f"{name}: {sys.executable} deploy/supervise.py {name} -- "
        f"{sys.executable} -c \"{SLEEPER}\" {work / name}.pid\n" for name in ("one", "two")))
    log = open(work / "honcho.log", "wb")
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", str(procfile),
                               "-d", str(ROOT)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "SUPERVISE_BACKOFF_S": "0.2"},
                              start_new_session=True)
    try:
        one, two = (wait_for(lambda n=n: _pid(work / f"{n}.pid"), 20, f"{n} started")
                    for n in ("one", "two"))
        os.kill(one, signal.SIGKILL)  # as a crash would
        restarted = wait_for(lambda: (p := _pid(work / "one.pid")) != one and p, 10,
                             "one restarted")
        assert _alive(restarted) and _alive(two) and honcho.poll() is None
        assert "supervise[one]: exited with status -9" in (work / "honcho.log").read_text()
        honcho.send_signal(signal.SIGINT)  # Ctrl-C
        assert honcho.wait(20) is not None
        wait_for(lambda: not _alive(restarted) and not _alive(two), 10, "everything stopped")
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
        log.close()
