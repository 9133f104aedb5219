"""The chaos suite's own cluster: Redis (AOF), the sandbox, 2 APIs, 3 workers, all real."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field

import redis

from shared import keys
from tests.support.redis_proc import RedisProcess
from tests.support.sandbox_proc import SandboxProcess
from tests.support.sentinel_proc import MASTER, SentinelGroup
from tests.support.services import Api, Worker

ADMIN = "chaos-admin-token-0123456789abcdef"


@dataclass(frozen=True)
class Timings:
    """Short timings so every fault plays out in seconds."""

    lease_ttl_s: float = 4.0
    claim_interval_s: float = 0.5
    cleanup_interval_s: float = 2.0
    pairing_timeout_s: float = 12.0
    qr_first_s: float = 8.0
    qr_next_s: float = 4.0
    qr_count: int = 3
    removal_delay_s: float = 2.0


@dataclass
class WorkerSlot:
    """One of the three worker places; a restart puts a new process (generation) in it."""

    name: str
    generation: int = 0
    worker: Worker | None = None
    clients: list[str] = field(default_factory=list)  # every host:pid it has had
    logs: list[str] = field(default_factory=list)  # every generation's log file

    @property
    def current_id(self) -> str:
        return f"{self.name}-g{self.generation}@test"


class ChaosCluster:
    """Starts, restarts and stops every process; knows which client label is which worker."""

    def __init__(self, timings: Timings, workers: int = 3, apis: int = 2, *,
                 sentinel: bool = False) -> None:
        self.timings = timings
        self.redis = RedisProcess(appendonly=True)
        # With sentinel: a primary, a replica and three Sentinels instead (``self.redis``
        # is then never started), and every process follows the Sentinels.
        self.group = SentinelGroup(down_after_ms=1000) if sentinel else None
        self.sandbox = SandboxProcess()
        self.slots = [WorkerSlot(f"w{i + 1}") for i in range(workers)]
        self.apis: list[Api] = []
        self._api_count = apis
        self._lock = threading.Lock()
        self.env: dict[str, str] = {}

    def start(self) -> ChaosCluster:
        t = self.timings
        if self.group is not None:
            self.group.start()
            redis_env = {"REDIS_URL": "redis://sentinel-managed:1/0",
                         "REDIS_SENTINELS": self.group.sentinels,
                         "REDIS_SENTINEL_MASTER": MASTER}
        else:
            self.redis.start()
            redis_env = {"REDIS_URL": self.redis.url}
        self.client().set(keys.BOOT_MARKER, "1")
        self.sandbox.start(qr_first_s=t.qr_first_s, qr_next_s=t.qr_next_s, qr_count=t.qr_count,
                           removal_delay_s=t.removal_delay_s)
        self.env = {
            **redis_env, "WA_BACKEND": "sandbox",
            "WA_SANDBOX_URL": self.sandbox.url,
            "WA_STORE": tempfile.mkdtemp(prefix="wapair-chaos-store-"),
            "LEASE_TTL_S": str(t.lease_ttl_s), "CLAIM_INTERVAL_S": str(t.claim_interval_s),
            "CLEANUP_INTERVAL_S": str(t.cleanup_interval_s),
            "PAIRING_TIMEOUT_S": str(t.pairing_timeout_s), "ADMIN_TOKEN": ADMIN,
            # 16 drivers on one address pair and reset far faster than people:
            # rate limits (tests/api/test_ratelimit.py) would only thin the load.
            "RATE_LIMIT_TENANT": "10000/minute", "RATE_LIMIT_ADDRESS": "100000/minute",
        }
        self.apis = [Api(f"chaos-api{i + 1}", self.env, workers=1).start()
                     for i in range(self._api_count)]
        for slot in self.slots:
            self._spawn(slot)
        client = self.client()
        for api in self.apis:
            api.wait_ready()
        for slot in self.slots:
            assert slot.worker is not None
            slot.worker.wait_ready(client)
        client.close()
        return self

    def client(self) -> redis.Redis:
        if self.group is not None:  # the primary the Sentinels name now
            return redis.Redis(port=self.group.primary_port(), socket_timeout=2,
                               socket_connect_timeout=2)
        return redis.Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=2)

    def _spawn(self, slot: WorkerSlot) -> Worker:
        slot.generation += 1
        worker = Worker(f"{slot.name}-g{slot.generation}", self.env).start()
        assert worker.proc is not None
        with self._lock:
            slot.worker = worker
            slot.clients.append(client_label(worker))
            slot.logs.append(str(worker.log_path))
        return worker

    def replace(self, slot: WorkerSlot) -> Worker:
        """Start the slot's next generation and wait until it heartbeats."""
        worker = self._spawn(slot)
        client = self.client()
        try:
            worker.wait_ready(client, timeout=60)
        finally:
            client.close()
        return worker

    def worker_of_client(self, label: str) -> str | None:
        """The slot name whose process dialled as ``label``."""
        with self._lock:
            return next((s.name for s in self.slots if label in s.clients), None)

    def restart_redis(self, down_s: float) -> float:
        """Stop Redis (SIGTERM: the AOF is flushed), keep it down ``down_s``, start it on the
        same port; returns the seconds it was unreachable."""
        started = time.monotonic()
        self.redis.stop()
        time.sleep(down_s)  # the outage is the fault
        self.redis.start()
        return time.monotonic() - started

    def kill_primary(self) -> tuple[float, float, int | None]:
        """``kill -9`` of the Redis primary (Sentinel only); returns the seconds until a
        replica was promoted and until the killed node was back as a replica, and the
        replica's lag in bytes just before the kill (what the promotion may lose)."""
        assert self.group is not None, "a primary kill needs ChaosCluster(sentinel=True)"
        lag = self.group.replica_lag()
        started = time.monotonic()
        old = self.group.kill_primary()
        self.group.wait_promoted(old)
        promoted = time.monotonic() - started
        self.group.restart_as_replica(old)
        return promoted, time.monotonic() - started, lag

    def stop(self) -> None:
        for slot in self.slots:
            if slot.worker is not None and slot.worker.alive():
                slot.worker.stop()
        for api in self.apis:
            api.stop()
        self.sandbox.cleanup()
        self.redis.cleanup()
        if self.group is not None:
            self.group.cleanup()

    def logs(self) -> str:
        """The tail of every worker log (printed when the suite fails)."""
        out = []
        for slot in self.slots:
            if slot.worker is not None:
                out.append(f"--- {slot.current_id}\n{slot.worker.log()[-4000:]}")
        return "\n".join(out)


def client_label(worker: Worker) -> str:
    """What the sandbox adapter sends as its client (host:pid) from ``worker``'s process."""
    assert worker.proc is not None
    return f"{socket.gethostname()}:{worker.proc.pid}"
