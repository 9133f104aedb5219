"""Real wapair processes for end-to-end tests: Celery workers and gunicorn API servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
import requests

from shared import keys
from tests.support.ports import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """A child process with its output in a log file (printed when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = Path(tempfile.mkstemp(prefix=f"wapair-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group, as the OOM killer or a lost host would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (read from /proc; zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                state, ppid = f.read().rsplit(") ", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Worker(Service):
    """``celery -A workers.app worker`` with the threads pool, as the Procfile runs it."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.worker_id = f"{name}@test"
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                "--pool", "threads", "--concurrency", "4", "--hostname", self.worker_id,
                "--queues", "wapair.claims", "--without-mingle", "--without-gossip",
                "--loglevel", "INFO"]
        super().__init__(name, argv, env)

    def wait_ready(self, client: redis.Redis, timeout: float = 30) -> Worker:
        wait_for(lambda: self._ready(client), timeout, f"worker {self.worker_id} heartbeat")
        return self

    def host_pids(self) -> list[int]:
        """The worker's connection hosts: its child processes (``workers.host.child``)."""
        assert self.proc is not None
        return children_of(self.proc.pid)

    def _ready(self, client: redis.Redis) -> bool:
        if not self.alive():
            raise AssertionError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
        return client.zscore(keys.WORKERS, self.worker_id) is not None


class Api(Service):
    """gunicorn serving ``api.wsgi:app`` on a free port."""

    def __init__(self, name: str, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", "8",
                "api.wsgi:app"]
        super().__init__(name, argv, env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> Api:
        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"api {self.name} exited:\n{self.log()[-3000:]}")
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200

        wait_for(up, timeout, f"api {self.name}")
        return self


class Beat(Service):
    """``celery -A workers.app beat`` (celery-redbeat), as the Procfile runs it."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "DEBUG"]
        super().__init__(name, argv, env)


class Flower(Service):
    """``celery -A workers.app flower`` with basic auth, bound to 127.0.0.1 (as deployed)."""

    def __init__(self, env: dict[str, str], user: str, password: str) -> None:
        self.port = free_port()
        self.auth = (user, password)
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
                "--address=127.0.0.1", f"--port={self.port}"]
        super().__init__("flower", argv, {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> Flower:
        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"flower exited:\n{self.log()[-3000:]}")
            return requests.get(f"{self.url}/healthcheck", timeout=2).status_code == 200

        wait_for(up, timeout, "flower")
        return self
