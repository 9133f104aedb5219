"""Releases, rolling restarts through the warm-shutdown handover, and a one-command rollback.

For workers run as local processes (one host, or one per host with its own
root). Layout under ``--root``::

    releases/<name>/   the code of a release (api/, shared/, workers/, ...)
    current, previous  symlinks to releases; ``rollback`` swaps them
    run/<worker>.pid   the running worker processes, .log their output

Commands (``python deploy/rollout.py --root DIR ...``, with wapair's
environment: REDIS_URL, WA_* and so on):

    release SRC NAME     copy the code in SRC into releases/NAME
    start --workers N    start workers w1..wN from current (those not running)
    activate NAME        previous := current, current := NAME, then rolling restart
    rollback             swap current and previous, then rolling restart
    restart              rolling restart of every worker onto current
    stop                 SIGTERM every worker (each hands its sessions over)
    status               which release each worker runs

Rolling restart, one worker at a time: note the tenants it owns, SIGTERM it
(its SessionHost closes each session, releases the lease and kicks a claim),
wait until every one of those tenants is connected on another worker, then
start the worker again from ``current`` and wait for its heartbeat. Needs at
least two workers, so that "elsewhere" exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from shared import keys
from shared.config import load_settings
from shared.redis_client import connect_redis

CODE = ("api", "shared", "workers", "setup.cfg", "pyproject.toml", "Procfile")
LIVE = (b"connected", b"reconnecting", b"pairing")


class Rollout:
    """The release directory and the worker processes it runs."""

    def __init__(self, root: Path, client: redis.Redis, timeout_s: float = 60.0) -> None:
        self.root = root
        self.redis = client
        self.timeout_s = timeout_s
        self.run = root / "run"
        self.run.mkdir(parents=True, exist_ok=True)
        (root / "releases").mkdir(exist_ok=True)

    # --- releases ---------------------------------------------------------------
    def release(self, source: Path, name: str) -> Path:
        target = self.root / "releases" / name
        if target.exists():
            raise SystemExit(f"release {name} exists already")
        target.mkdir()
        for item in CODE:
            src = source / item
            if src.is_dir():
                shutil.copytree(src, target / item,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.exists():
                shutil.copy2(src, target / item)
        if not (self.root / "current").exists():
            self._point("current", name)
        return target

    def _point(self, link: str, name: str) -> None:
        tmp = self.root / f".{link}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("releases") / name)
        os.replace(tmp, self.root / link)  # atomic: never a moment without the link

    def _release_of(self, link: str) -> str | None:
        path = self.root / link
        return os.readlink(path).split("/")[-1] if path.is_symlink() else None

    def activate(self, name: str) -> None:
        if not (self.root / "releases" / name).is_dir():
            raise SystemExit(f"no release {name}")
        current = self._release_of("current")
        if current == name:
            raise SystemExit(f"{name} is already current")
        if current:
            self._point("previous", current)
        self._point("current", name)
        self.restart()

    def rollback(self) -> None:
        previous, current = self._release_of("previous"), self._release_of("current")
        if previous is None or current is None:
            raise SystemExit("no previous release to go back to")
        self._point("previous", current)
        self._point("current", previous)
        self.restart()

    # --- workers -------------------------------------------------------------
    def workers(self) -> list[str]:
        return sorted(p.stem for p in self.run.glob("*.pid"))

    def worker_id(self, name: str) -> str:
        return f"{name}@{socket.gethostname()}"

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.run / f"{name}.pid").read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, name: str) -> None:
        if self.pid(name):
            return
        code = (self.root / "current").resolve()
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                "--pool", "threads", "--concurrency", "8", "--hostname", self.worker_id(name),
                "--queues", "wapair.claims", "--without-mingle", "--without-gossip",
                "--loglevel", "INFO"]
        with open(self.run / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=code, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        (self.run / f"{name}.pid").write_text(str(proc.pid))
        (self.run / f"{name}.release").write_text(code.name)
        self._wait(lambda: self.redis.zscore(keys.WORKERS, self.worker_id(name)) is not None,
                   f"{name} to heartbeat", lambda: self.pid(name) is not None)
        print(f"{name}: running release {code.name} (pid {proc.pid})", flush=True)

    def stop(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            try:
                self._wait(lambda: self.pid(name) is None, f"{name} to exit")
            except TimeoutError:
                os.killpg(pid, signal.SIGKILL)
                print(f"{name}: did not stop in time; killed (its leases will expire)")
        (self.run / f"{name}.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        names = self.workers()
        if len(names) < 2:
            raise SystemExit("a rolling restart needs at least two workers")
        for name in names:
            started = time.monotonic()
            owned = self.owned_by(self.worker_id(name))
            self.stop(name)
            self._wait(lambda n=name, o=owned: self.moved(o, self.worker_id(n)),
                       f"the {len(owned)} tenants of {name} to connect elsewhere")
            moved_in = time.monotonic() - started
            self.start(name)
            print(f"{name}: {len(owned)} tenants handed over in {moved_in:.1f} s", flush=True)

    def owned_by(self, worker_id: str) -> list[str]:
        owned = []
        for key in self.redis.scan_iter(match="wa:{*}:lease", count=500):
            value = self.redis.get(key)
            if value and value.decode().split("|")[0] == worker_id:
                owned.append(key.decode().split("{", 1)[1].split("}", 1)[0])
        return owned

    def moved(self, tenants: list[str], old_owner: str) -> bool:
        """True once each tenant is owned by another worker and, if it wants one, connected."""
        for tenant in tenants:
            state = self.redis.hget(keys.session(tenant), "state")
            lease = self.redis.get(keys.lease(tenant))
            owner = lease.decode().split("|")[0] if lease else None
            if state not in LIVE:
                continue
            if owner in (None, old_owner) or (state != b"connected" and state != b"pairing"):
                return False
        return True

    def _wait(self, done: object, what: str, alive: object = None) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if done():  # type: ignore[operator]
                return
            if alive is not None and not alive():  # type: ignore[operator]
                raise SystemExit(f"gave up waiting for {what}: the process exited")
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {self.timeout_s:.0f} s waiting for {what}")

    def status(self) -> None:
        print(f"current: {self._release_of('current')}  previous: {self._release_of('previous')}")
        for name in self.workers():
            release = (self.run / f"{name}.release").read_text()
            print(f"{name}: pid {self.pid(name)} release {release}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rollout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release")
    rel.add_argument("source", type=Path)
    rel.add_argument("name")
    sub.add_parser("start").add_argument("--workers", type=int, default=2)
    sub.add_parser("activate").add_argument("name")
    for name in ("rollback", "restart", "stop", "status"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    rollout = Rollout(args.root, connect_redis(load_settings()), args.timeout)
    if args.command == "release":
        print(rollout.release(args.source, args.name))
    elif args.command == "start":
        for i in range(args.workers):
            rollout.start(f"w{i + 1}")
    elif args.command == "activate":
        rollout.activate(args.name)
    elif args.command == "rollback":
        rollout.rollback()
    elif args.command == "restart":
        rollout.restart()
    elif args.command == "stop":
        for name in rollout.workers():
            rollout.stop(name)
    else:
        rollout.status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
