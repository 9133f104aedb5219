"""A primary, a replica and three Sentinels, all real redis-server processes on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from api.cli import redis_server_binary
from tests.support.ports import free_port, wait_for

MASTER = "wapair-test"


class SentinelGroup:
    """One monitored group the test owns; ``kill_primary`` is a ``kill -9``."""

    def __init__(self, *, down_after_ms: int = 1000, sentinels: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wapair-sentinel-"))
        self.down_after_ms = down_after_ms
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[tuple[int, int], redis.Redis] = {}

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS value for this group."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def _start_data(self, port: int, replica_of: int | None) -> None:
        folder = self.dir / str(port)
        folder.mkdir(exist_ok=True)
        args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(folder), "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--replica-announce-ip", "127.0.0.1"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)

    def start(self) -> SentinelGroup:
        primary, replica = self.data_ports
        self._start_data(primary, None)
        self._start_data(replica, primary)
        wait_for(lambda: self.client(replica).info("replication")["master_link_status"] == "up",
                 15, "the replica to sync")
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nsentinel announce-ip 127.0.0.1\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n")
            self.procs[port] = subprocess.Popen(
                [redis_server_binary(), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def all_see_the_replica() -> bool:
            return all(
                self.client(p).sentinel_master(MASTER)["num-slaves"] >= 1
                and self.client(p).sentinel_master(MASTER)["num-other-sentinels"]
                >= len(self.sentinel_ports) - 1
                for p in self.sentinel_ports)

        wait_for(all_see_the_replica, 20, "every Sentinel to know the group")
        return self

    def client(self, port: int, db: int = 0) -> redis.Redis:
        if (port, db) not in self._clients:
            self._clients[port, db] = redis.Redis(
                port=port, db=db, socket_timeout=1, socket_connect_timeout=0.5,
                decode_responses=True)
        return self._clients[port, db]

    def primary_port(self) -> int:
        """The port the Sentinels name as primary now."""
        return int(self.client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            MASTER)[1])

    def replica_lag(self) -> int | None:
        """Bytes of the primary's replication stream its replica has not acknowledged
        (None: no replica online, or the primary did not answer). A replica acknowledges
        once a second, so this is an upper bound of what it lacks: up to a second of
        writes (18-40 KB in the chaos profile), not what a promotion must lose."""
        try:
            info = self.client(self.primary_port()).info("replication")
        except redis.RedisError:
            return None
        replica = info.get("slave0")
        if not isinstance(replica, dict) or replica.get("state") != "online":
            return None
        return int(info["master_repl_offset"]) - int(replica["offset"])

    def kill_primary(self) -> int:
        """``kill -9`` the current primary; returns its port."""
        port = self.primary_port()
        proc = self.procs.pop(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        return port

    def wait_promoted(self, old: int, timeout: float = 20) -> int:
        """Wait until every Sentinel names another primary and it answers as one."""
        def promoted() -> int | None:
            ports = {int(self.client(p).sentinel_get_master_addr_by_name(MASTER)[1])
                     for p in self.sentinel_ports}
            if len(ports) != 1 or old in ports:
                return None
            new = ports.pop()
            return new if self.client(new).info("replication")["role"] == "master" else None

        return wait_for(promoted, timeout, "a replica to be promoted")

    def restart_as_replica(self, port: int, timeout: float = 20) -> None:
        """Start a killed data node again as a replica of the primary now, and wait until
        it has synced (its AOF may say it was primary: the Sentinels turn it into a replica
        either way), so the group can lose its primary once more."""
        self._start_data(port, self.primary_port())
        wait_for(lambda: self.client(port).info("replication").get("master_link_status")
                 == "up", timeout, f"node {port} to sync as a replica")

    def cleanup(self) -> None:
        for client in self._clients.values():
            client.close()
        for proc in self.procs.values():
            proc.kill()
            proc.wait(5)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
