"""The chaos suite's message traffic: sends through the API, contacts writing in, and the
end-of-run collection of what became of each (the checks are in ``message_checks``).

One thread sends to sandbox contacts for tenants last seen connected, each message with
its own Idempotency-Key that every retry reuses (a 503 during a Redis restart, a
timeout), and has contacts write to tenants through the sandbox phone API, connected or
not: the server holds what a tenant with no connection cannot take.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.sandbox.records import account_for_tenant
from tests.chaos.cluster import ChaosCluster
from tests.chaos.driver import Ledger
from workers.session.messaging import inbound_id

#: Statuses after which an outbound message changes only by a receipt.
FINISHED = ("sent", "delivered", "read", "failed", "unknown")
#: How long one message's POST is retried (same key) before it counts as unresolved.
POST_PATIENCE_S = 30.0


@dataclass
class Outbound:
    tenant: str
    message_id: str
    key: str  # its Idempotency-Key
    to: str  # the contact's number (digits)
    text: str  # unique in the run: the inbox check counts it
    accepted_at: float
    posts: int  # how many POSTs it took (more than one: a retry with the same key)
    posted_at: float = 0.0  # when its last POST began: the API cannot have had it before


@dataclass
class Inbound:
    tenant: str
    wa_message_id: str
    sender: str
    sent_at: float

    @property
    def message_id(self) -> str:
        return inbound_id(self.wa_message_id)


@dataclass
class MessageLedger:
    """What the message driver did; the checker compares it with the API and the sandbox."""

    outbound: list[Outbound] = field(default_factory=list)
    inbound: list[Inbound] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # "409 not_connected" -> count
    retried_same_key: int = 0  # POSTs repeated with a key after no answer or a 503
    unresolved: list[str] = field(default_factory=list)  # keys never answered 202/4xx
    server_errors: list[str] = field(default_factory=list)  # 5xx but 503
    lock: threading.Lock = field(default_factory=threading.Lock)


def contact(tenant_index: int, j: int, inbound: bool = False) -> str:
    """A contact's number: per tenant, three to write to and three that write in."""
    return f"62{9 if inbound else 8}{tenant_index:04d}{j}77"


class MessageDriver(threading.Thread):
    """Sends and receives until told to stop, a few messages a second across the tenants."""

    def __init__(self, cluster: ChaosCluster, tenant_keys: dict[str, str], ledger: Ledger,
                 messages: MessageLedger, stop: threading.Event, seed: int) -> None:
        super().__init__(name="drive-messages", daemon=True)
        self.cluster = cluster
        self.tenant_keys = tenant_keys
        self.index = {tenant: i for i, tenant in enumerate(sorted(tenant_keys))}
        self.ledger = ledger
        self.messages = messages
        self.stop_new = stop
        self.rng = random.Random(seed)
        self.error: BaseException | None = None
        self.sent = 0
        self._count = threading.Lock()  # the fault injector sends too (into a ban)

    def run(self) -> None:
        try:
            while not self.stop_new.wait(self.rng.uniform(0.15, 0.45)):
                with self.ledger.lock:
                    seen = dict(self.ledger.last_seen)
                connected = sorted(t for t, s in seen.items() if s == "connected")
                if connected:
                    self.send(self.rng.choice(connected))
                if seen and self.rng.random() < 0.6:
                    # Any tenant that has been seen: one with no owner now included.
                    self.write_in(self.rng.choice(sorted(seen)))
        except BaseException as e:  # surfaced by the test
            self.error = e

    def headers(self, tenant: str) -> dict[str, str]:
        return {"X-Tenant-ID": tenant, "Authorization": f"Bearer {self.tenant_keys[tenant]}"}

    def send(self, tenant: str) -> None:
        """POST one message; retry it with the same Idempotency-Key until it is decided."""
        with self._count:
            self.sent += 1
            key = f"chaos-{tenant}-{self.sent}"
        to = contact(self.index[tenant], self.rng.randrange(3))
        body = {"to": "+" + to, "text": f"chaos message {key}"}
        deadline = time.monotonic() + POST_PATIENCE_S
        for posts in range(1, 1000):
            api = self.rng.choice(self.cluster.apis)
            posted_at = time.time()
            try:
                response = requests.post(f"{api.url}/api/whatsapp/messages", json=body,
                                         headers={**self.headers(tenant), "Idempotency-Key": key},
                                         timeout=10)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 202:
                with self.messages.lock:
                    self.messages.outbound.append(Outbound(
                        tenant, response.json()["id"], key, to, body["text"], time.time(), posts,
                        posted_at))
                return
            if response is not None and 400 <= response.status_code < 500:
                code = response.json().get("error", {}).get("code", "")
                with self.messages.lock:
                    name = f"{response.status_code} {code}"
                    self.messages.refused[name] = self.messages.refused.get(name, 0) + 1
                return
            if response is not None and response.status_code != 503:
                with self.messages.lock:
                    self.messages.server_errors.append(
                        f"POST messages {key}: {response.status_code} {response.text[:200]}")
            if time.monotonic() > deadline:
                with self.messages.lock:
                    self.messages.unresolved.append(key)
                return
            with self.messages.lock:
                self.messages.retried_same_key += 1
            time.sleep(0.5)

    def write_in(self, tenant: str) -> None:
        """A contact writes to the tenant's number (the sandbox holds it while it is away)."""
        sender = contact(self.index[tenant], self.rng.randrange(3), inbound=True)
        sent = self.cluster.sandbox.phone_send(sender, account_for_tenant(tenant),
                                               f"chaos inbound to {tenant}")
        with self.messages.lock:
            self.messages.inbound.append(Inbound(tenant, sent["wa_message_id"], sender,
                                                 time.time()))


@dataclass
class MessageOutcome:
    """What became of the messages at the end, read from the API and the sandbox."""

    statuses: dict[str, str] = field(default_factory=dict)  # message id -> status
    errors: dict[str, str] = field(default_factory=dict)  # message id -> error code
    error_at: dict[str, float] = field(default_factory=dict)  # message id -> when recorded
    sent_at: dict[str, float] = field(default_factory=dict)  # message id -> WhatsApp took it
    in_history: set[str] = field(default_factory=set)  # wa ids of 'message' events seen
    recorded: set[str] = field(default_factory=set)  # wa ids with an inbound record
    trimmed: dict[str, float] = field(default_factory=dict)  # tenant -> oldest event's at
    held: set[str] = field(default_factory=set)  # wa ids the sandbox still holds
    inboxes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    drained_in_s: float = 0.0
    live: set[str] = field(default_factory=set)  # tenants connected or reconnecting


class Collector:
    """Reads the end state through the API (any replica) and the sandbox."""

    def __init__(self, cluster: ChaosCluster, tenant_keys: dict[str, str],
                 messages: MessageLedger) -> None:
        self.cluster = cluster
        self.tenant_keys = tenant_keys
        self.messages = messages

    def get(self, tenant: str, path: str) -> requests.Response:
        return requests.get(f"{self.cluster.apis[0].url}{path}", timeout=10, headers={
            "X-Tenant-ID": tenant, "Authorization": f"Bearer {self.tenant_keys[tenant]}"})

    def statuses(self, tenant: str, ids: list[str], outcome: MessageOutcome) -> None:
        listed = self.get(tenant, "/api/whatsapp/messages?direction=out&limit=200")
        listed.raise_for_status()
        found = {m["id"]: m for m in listed.json()["messages"]}
        for message_id in ids:
            if message_id not in found:  # older than the newest 200 (long runs)
                response = self.get(tenant, f"/api/whatsapp/messages/{message_id}")
                found[message_id] = response.json() if response.ok else {"status": "missing"}
            outcome.statuses[message_id] = found[message_id]["status"]
            if found[message_id].get("sent_at") is not None:
                outcome.sent_at[message_id] = float(found[message_id]["sent_at"])
            if found[message_id].get("error"):
                outcome.errors[message_id] = found[message_id]["error"]["code"]
                outcome.error_at[message_id] = float(found[message_id]["error"]["at"])

    def inbound(self, tenant: str, wanted: list[Inbound], outcome: MessageOutcome) -> None:
        history = self.get(tenant, "/api/whatsapp/history?limit=1000")
        history.raise_for_status()
        events = history.json()["events"]
        if len(events) >= 1000:
            outcome.trimmed[tenant] = float(events[0]["at"])
        outcome.in_history |= {str(e["data"].get("wa_message_id")) for e in events
                               if e["kind"] == "message"}
        for item in wanted:
            if item.wa_message_id in outcome.recorded or (
                    item.wa_message_id in outcome.in_history):
                outcome.recorded.add(item.wa_message_id)
                continue
            if self.get(tenant, f"/api/whatsapp/messages/{item.message_id}").ok:
                outcome.recorded.add(item.wa_message_id)

    def collect(self, base_s: float, per_message_s: float) -> MessageOutcome:
        """Wait until nothing is left in flight, then read it all. The wait is bounded:
        ``base_s`` plus ``per_message_s`` for each message of the longest outbox left
        when it began (pacing spaces a tenant's sends)."""
        with self.messages.lock:
            outbound, inbound = list(self.messages.outbound), list(self.messages.inbound)
        by_tenant: dict[str, list[str]] = {}
        for m in outbound:
            by_tenant.setdefault(m.tenant, []).append(m.message_id)
        began = time.monotonic()
        deadline: float | None = None
        outcome = MessageOutcome()
        while True:
            outcome = self._read(by_tenant, inbound, outcome)
            waiting = [i for i, s in outcome.statuses.items() if s not in FINISHED]
            if deadline is None:
                backlog = max((sum(outcome.statuses[i] not in FINISHED for i in ids)
                               for ids in by_tenant.values()), default=0)
                deadline = began + base_s + per_message_s * backlog
            unsettled = [m for m in inbound if m.wa_message_id not in outcome.recorded
                         and (m.tenant in outcome.live or m.wa_message_id not in outcome.held)]
            if (not waiting and not unsettled) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        outcome.drained_in_s = time.monotonic() - began
        numbers = {m.to for m in outbound}
        outcome.inboxes = {n: self.cluster.sandbox.inbox(n)["messages"] for n in numbers}
        outcome.violations = self.cluster.sandbox.violations()
        return outcome

    def _read(self, by_tenant: dict[str, list[str]], inbound: list[Inbound],
              before: MessageOutcome) -> MessageOutcome:
        outcome = MessageOutcome(recorded=set(before.recorded))
        for tenant in self.tenant_keys:
            state = self.get(tenant, "/api/whatsapp/status").json()["state"]
            if state in ("connected", "reconnecting"):
                outcome.live.add(tenant)
            self.statuses(tenant, by_tenant.get(tenant, []), outcome)
            wanted = [m for m in inbound if m.tenant == tenant]
            if wanted:
                self.inbound(tenant, wanted, outcome)
                outcome.held |= set(self.cluster.sandbox.held(account_for_tenant(tenant)))
        return outcome
