"""Many tenants at once, each a thread that pairs, scans, holds, resets and resumes via the API."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.chaos.cluster import ADMIN, ChaosCluster

TERMINAL = ("paired", "expired", "failed", "cancelled")


@dataclass
class PairingRecord:
    tenant: str
    pairing_id: str
    accepted_at: float
    status: str = ""
    ended_at: float | None = None
    scanned: bool = False


@dataclass
class Ledger:
    """What the driver did and saw; the checker compares it with the sandbox and the API."""

    pairings: dict[str, PairingRecord] = field(default_factory=dict)
    commands: list[tuple[str, str, float]] = field(default_factory=list)  # tenant, kind, at
    server_errors: list[str] = field(default_factory=list)  # any 5xx but 503
    unavailable: int = 0  # 503s (Redis restarting): allowed
    last_seen: dict[str, str] = field(default_factory=dict)  # tenant -> state last observed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_command(self, tenant: str, kind: str) -> None:
        with self.lock:
            self.commands.append((tenant, kind, time.time()))


class TenantDriver(threading.Thread):
    """One tenant's life, over and over, until told to stop starting new things."""

    def __init__(self, cluster: ChaosCluster, tenant: str, key: str, ledger: Ledger,
                 stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"drive-{tenant}", daemon=True)
        self.cluster = cluster
        self.tenant = tenant
        self.headers = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {key}"}
        self.ledger = ledger
        self.stop_new = stop
        self.rng = random.Random(seed)
        self.error: BaseException | None = None
        self.doing = "starting"  # what it waits for now (named when it is stuck)
        # A pairing or command not done by then is stuck: the thread reports and moves on.
        t = cluster.timings
        self.patience_s = t.pairing_timeout_s + 2 * t.lease_ttl_s + t.cleanup_interval_s + 10

    # -- HTTP ----------------------------------------------------------------
    def call(self, method: str, path: str) -> requests.Response | None:
        api = self.rng.choice(self.cluster.apis)
        try:
            response = requests.request(method, f"{api.url}{path}", headers=self.headers,
                                        json={} if method == "POST" else None, timeout=15)
        except requests.RequestException as e:
            with self.ledger.lock:
                self.ledger.server_errors.append(f"{method} {path}: {e}")
            return None
        if response.status_code == 503:
            with self.ledger.lock:
                self.ledger.unavailable += 1
            return None
        if response.status_code >= 500:
            with self.ledger.lock:
                self.ledger.server_errors.append(
                    f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        return response

    def status(self) -> dict[str, Any] | None:
        response = self.call("GET", "/api/whatsapp/status")
        if response is None or response.status_code != 200:
            return None
        st: dict[str, Any] = response.json()
        with self.ledger.lock:
            self.ledger.last_seen[self.tenant] = st["state"]
            pairing = st.get("pairing")
            record = self.ledger.pairings.get(pairing["id"]) if pairing else None
            if record and pairing["status"] in TERMINAL and not record.status:
                record.status, record.ended_at = pairing["status"], time.time()
        return st

    # -- the life ----------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stop_new.is_set():
                self.step()
        except BaseException as e:  # surfaced by the test
            self.error = e

    def step(self) -> None:
        st = self.status()
        if st is None:
            time.sleep(0.3)
            return
        state = st["state"]
        if state == "pairing":
            self.follow(st["pairing"]["id"])
        elif state == "connected":
            if self.stop_new.wait(self.rng.uniform(3, 10)):
                return
            if self.rng.random() < 0.25:
                self.command("reset")
        elif state in ("idle", "failed", "logged_out"):
            if st["device"] and state == "idle" and self.rng.random() < 0.6:
                self.command("resume")
            else:
                self.pair()
        time.sleep(0.3)

    def command(self, kind: str) -> None:
        response = self.call("POST", f"/api/whatsapp/{kind}")
        if response is not None and response.status_code == 202:
            self.ledger.add_command(self.tenant, kind)
            self.settle(kind)

    def settle(self, kind: str) -> None:
        """Wait until the command has taken effect, so what we expect at the end is known."""
        done = ("idle",) if kind == "reset" else ("connected", "idle", "failed", "logged_out")
        self.doing = f"the {kind} to take effect"
        deadline = time.monotonic() + self.patience_s
        while time.monotonic() < deadline:
            st = self.status()
            if st is not None and st["state"] in done:
                return
            time.sleep(0.3)
        with self.ledger.lock:
            self.ledger.server_errors.append(f"{self.tenant}: {kind} never took effect")

    def pair(self) -> None:
        response = self.call("POST", "/api/whatsapp/pair")
        if response is None or response.status_code != 202:
            return
        pairing_id = response.json()["pairing_id"]
        with self.ledger.lock:
            self.ledger.pairings[pairing_id] = PairingRecord(self.tenant, pairing_id, time.time())
        self.ledger.add_command(self.tenant, "pair")
        self.follow(pairing_id)

    def follow(self, pairing_id: str) -> None:
        """Watch a pairing to its end, scanning its QR code (most of the time)."""
        scan = self.rng.random() < 0.85
        scan_after = time.monotonic() + self.rng.uniform(0.3, 2.5)
        self.doing = f"pairing {pairing_id} to end"
        deadline = time.monotonic() + self.patience_s
        while True:
            if time.monotonic() > deadline:
                with self.ledger.lock:
                    self.ledger.server_errors.append(f"{self.tenant}: {self.doing}: never did")
                return
            st = self.status()
            if st is None:
                time.sleep(0.3)
                continue
            pairing = st.get("pairing") or {}
            if pairing.get("id") != pairing_id or pairing.get("status") in TERMINAL:
                return
            if scan and time.monotonic() >= scan_after:
                response = self.call("GET", "/api/whatsapp/qr")
                if response is not None and response.status_code == 200:
                    code = response.json()["code"]
                    ok = self.cluster.sandbox.request("POST", "/phone/scan", {"code": code})
                    if ok.status_code == 200:
                        scan = False
                        with self.ledger.lock:
                            record = self.ledger.pairings.get(pairing_id)
                            if record:
                                record.scanned = True
            time.sleep(0.3)


def create_tenants(cluster: ChaosCluster, count: int) -> list[tuple[str, str]]:
    """``count`` tenants through the admin API; returns (id, key) pairs."""
    out = []
    for i in range(count):
        tenant = f"chaos-{i:03d}"
        response = requests.post(f"{cluster.apis[0].url}/api/admin/tenants", json={"id": tenant},
                                 headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert response.status_code == 201, response.text
        out.append((tenant, response.json()["api_key"]))
    return out
