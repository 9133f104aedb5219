"""The faults the chaos suite injects, each recorded with when and on whom."""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field

import redis
import requests

from shared import keys
from shared.config import load_settings
from shared.state import Command
from shared.taskqueue import create_celery, send_kick
from tests.chaos.cluster import ChaosCluster, WorkerSlot, client_label
from tests.chaos.driver import Ledger
from tests.chaos.messages import MessageDriver
from tests.support.ports import wait_for

KINDS = ("sigkill", "sigterm_rolling", "sigstop", "redis_restart", "duplicates", "host_kill",
         "host_stop", "temporary_ban")
# Faults of the Sentinel profile only (ChaosCluster(sentinel=True)).
SENTINEL_KINDS = ("primary_kill",)
# Faults after which Redis may have lost writes and grants freeze for up to a TTL.
REDIS_FAULTS = ("redis_restart", "primary_kill")
#: How long a ``temporary_ban`` lasts: short, since the injector does not wait it out.
BAN_S = 3.0


@dataclass
class Fault:
    kind: str
    started_at: float  # wall clock, like the sandbox log
    ended_at: float = 0.0
    clients: list[str] = field(default_factory=list)  # host:pid of the processes hit
    note: str = ""
    # A temporary_ban's target and expiry (wall clock, a lower bound of the sandbox's):
    # a ban hits one tenant, not the processes in ``clients``.
    tenant: str = ""
    jid: str = ""
    until: float = 0.0


class FaultInjector:
    """Injects one fault at a time and keeps three workers running."""

    def __init__(self, cluster: ChaosCluster, ledger: Ledger, seed: int,
                 messenger: MessageDriver | None = None) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.messenger = messenger  # sends one message into a ban, so there is one to check
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        settings = load_settings(environ={k: v for k, v in cluster.env.items()
                                          if k.startswith("REDIS_")})
        self.celery = create_celery(settings, name="wapair-chaos")

    def inject(self, kind: str) -> Fault:
        fault = Fault(kind, time.time())
        getattr(self, f"_{kind}")(fault)
        fault.ended_at = time.time()
        self.faults.append(fault)
        return fault

    def _busiest(self) -> WorkerSlot:
        """The slot whose worker owns the most tenants (a fault there hits most)."""
        client = self.cluster.client()
        try:
            owners = [v.decode().split("|")[0] for v in
                      (client.get(k) for k in client.scan_iter("wa:{*}:lease")) if v]
        finally:
            client.close()
        counts = {s.name: owners.count(s.current_id) for s in self.cluster.slots}
        best = max(counts.values())
        return self.rng.choice([s for s in self.cluster.slots if counts[s.name] == best])

    def _sigkill(self, fault: Fault) -> None:
        slot = self.rng.choice(self.cluster.slots)
        assert slot.worker is not None
        fault.clients.append(client_label(slot.worker))
        fault.note = slot.current_id
        slot.worker.kill()
        self.cluster.replace(slot)

    def _sigterm_rolling(self, fault: Fault) -> None:
        for slot in self.cluster.slots:
            assert slot.worker is not None
            fault.clients.append(client_label(slot.worker))
            old_id = slot.current_id
            slot.worker.stop(timeout=30)
            self.cluster.replace(slot)
            wait_for(lambda old_id=old_id: not self._owned_by(old_id), 15,
                     f"the tenants of {old_id} to move")
        fault.note = "all workers, one at a time"

    def _owned_by(self, worker_id: str) -> bool:
        client = self.cluster.client()
        try:
            return any(v and v.decode().startswith(worker_id + "|")
                       for v in (client.get(k) for k in client.scan_iter("wa:{*}:lease")))
        finally:
            client.close()

    def _sigstop(self, fault: Fault) -> None:
        slot = self._busiest()
        assert slot.worker is not None
        fault.clients.append(client_label(slot.worker))
        fault.note = slot.current_id
        pause_s = self.cluster.timings.lease_ttl_s + 2
        slot.worker.signal(signal.SIGSTOP)
        try:
            time.sleep(pause_s)  # the pause is the fault: it must last past the TTL
        finally:
            slot.worker.signal(signal.SIGCONT)
        fault.note += f", paused {pause_s:.0f} s"

    def _a_host(self, fault: Fault) -> tuple[WorkerSlot, int] | None:
        """One connection host of the busiest worker, recorded on ``fault``; None if none."""
        slot = self._busiest()
        assert slot.worker is not None
        hosts = slot.worker.host_pids()
        if not hosts:
            fault.note = "skipped: no host"
            return None
        fault.clients.append(client_label(slot.worker))  # connections are logged by owner
        return slot, self.rng.choice(hosts)

    def _host_kill(self, fault: Fault) -> None:
        """SIGKILL one connection host of the busiest worker (a library abort)."""
        picked = self._a_host(fault)
        if picked is None:
            return
        slot, pid = picked
        os.kill(pid, signal.SIGKILL)
        fault.note = f"{slot.current_id}: host pid {pid}"

    def _host_stop(self, fault: Fault) -> None:
        """SIGSTOP one connection host (a wedged library: its closes hang, it goes silent)
        until its worker kills it; SIGCONT after that is a no-op on the dead host."""
        picked = self._a_host(fault)
        if picked is None:
            return
        slot, pid = picked
        worker = slot.worker
        assert worker is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: pid not in worker.host_pids(), 15,
                     f"the worker to kill its stopped host {pid}")
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        fault.note = f"{slot.current_id}: host pid {pid} stopped until killed"

    def _redis_restart(self, fault: Fault) -> None:
        # Up to a little past the point where holders must fence (TTL - TTL/3 - margin).
        most = self.cluster.timings.lease_ttl_s * 0.6
        down = self.cluster.restart_redis(self.rng.uniform(0.5, most))
        fault.note = f"down {down:.2f} s, AOF kept"

    def _primary_kill(self, fault: Fault) -> None:
        """kill -9 of the Redis primary under Sentinel: a promotion, which may lose the
        replica's lag, then the killed node back as a replica (for the next kill)."""
        promoted, back, lag = self.cluster.kill_primary()
        behind = "replica lag unknown" if lag is None else f"replica acked {lag} bytes behind"
        fault.note = (f"{behind}, promoted in {promoted:.2f} s, old primary a replica "
                      f"after {back:.2f} s")

    def _duplicates(self, fault: Fault) -> None:
        """Kicks delivered three times, and stale pair commands delivered again."""
        client = self.cluster.client()
        try:
            with self.ledger.lock:
                old = list(self.ledger.pairings.values())
            sample = self.rng.sample(old, min(6, len(old)))
            for record in sample:
                stale = Command(f"c_dup{self.rng.getrandbits(32):08x}", "pair", record.tenant,
                                record.accepted_at, record.pairing_id, "qr")
                client.rpush(keys.mailbox(record.tenant), stale.to_json())
                client.sadd(keys.ACTIVE, record.tenant)
                lease = client.get(keys.lease(record.tenant))
                owner = lease.decode().split("|")[0] if lease else None
                for _ in range(3):
                    send_kick(self.celery, record.tenant, owner)
                    send_kick(self.celery, record.tenant, None)
            fault.note = f"{len(sample)} tenants: a stale pair command, 6 kicks each"
        except redis.RedisError as e:
            fault.note = f"skipped: {e}"
        finally:
            client.close()

    def _temporary_ban(self, fault: Fault) -> None:
        """The sandbox bans a connected tenant's device for ``BAN_S``; one message is sent
        to it right away. Not waited out: the owner must pause and resume by itself."""
        with self.ledger.lock:
            connected = {t for t, s in self.ledger.last_seen.items() if s == "connected"}
        live = {c["tenant"]: c["device"] for c in self.cluster.sandbox.live_connections()
                if c["mode"] == "resume" and c["device"] and c["tenant"] in connected}
        if not live:
            fault.note = "skipped: no connected tenant"
            return
        sending: set[str] = set()
        if self.messenger is not None:
            with self.messenger.messages.lock:
                sending = {m.tenant for m in self.messenger.messages.outbound}
        # A tenant the traffic already sends to, so the ban meets queued sends too.
        tenant = self.rng.choice(sorted(set(live) & sending) or sorted(live))
        started = time.time()
        try:
            self.cluster.sandbox.ban(live[tenant], BAN_S, code=402)
        except requests.HTTPError as e:  # a reset unlinked the device meanwhile
            fault.note = f"skipped: {tenant}: {e}"
            return
        fault.tenant, fault.jid = tenant, live[tenant]
        fault.started_at, fault.until = started, started + BAN_S  # the ban's, not the choice's
        if self.messenger is not None:
            self.messenger.send(tenant)
        fault.note = f"{tenant} ({fault.jid}) banned {BAN_S:.0f} s"
