"""What a worker remembers of its tenants, to re-seed a Redis that lost its data.

Redis is the system of record; production keeps it with AOF (see
docs/reliability.md). Without persistence a restart loses every tenant, key
hash and session. The workers that held the tenants still know them, so each
keeps, per tenant it owns (and for a while after it fenced one), a
``RecoveryRecord``: the tenant record's id, domain and creation time, and the
device JID. No API key is kept, nor its hash: a worker's copy could predate a
rotation or revocation that Redis lost with everything else, and a revoked key
must never work again. A re-seeded tenant has no key until an operator rotates.

When the boot marker (``keys.BOOT_MARKER``) changes value (Redis found it missing: data
lost), each worker runs ``restore_tenant.lua`` for every record it keeps. The
script writes only what is missing, so several workers re-seeding one tenant
agree; the normal grant freeze (one TTL) then runs out and the claim scan
resumes the devices, whose keys stay in ``WA_STORE``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from redis.client import Pipeline

from shared import keys
from shared.clock import Clock
from shared.scripts import execute_pipelined, queue_script, scripts_for
from shared.state_machine import LIVE_STATES

log = logging.getLogger(__name__)

#: Records read again per heartbeat (round robin), so a rotated key or a new
#: device reaches the record within (owned tenants / batch) heartbeats.
REFRESH_BATCH = 64


@dataclass
class RecoveryRecord:
    """What re-seeding one tenant needs (never its key or the key's hash)."""

    tenant: str
    domain: str = ""
    created_at: str = ""
    device: str = ""
    live: bool = False
    fenced_at: float | None = None  # monotonic; None while this worker owns the tenant


class RecoveryCache:
    """The recovery records of one worker; thread-safe, cheap to keep up to date."""

    def __init__(self, client: redis.Redis, clock: Clock, keep_after_fence_s: float) -> None:
        self._redis = client
        self._clock = clock
        self.keep_after_fence_s = keep_after_fence_s
        self._records: dict[str, RecoveryRecord] = {}
        self._lock = threading.Lock()
        self._boot: str | None = None
        self._cursor = 0

    # --- keeping records ---------------------------------------------------
    def capture(self, tenants: list[str]) -> None:
        """Read the owned tenants' records in one pipelined round trip (the refresh)."""
        if not tenants:
            return
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(keys.tenant_record(tenant))
            pipe.hmget(keys.session(tenant), "state", "device")
        try:
            replies = pipe.execute()
        except redis.RedisError:
            return  # keep what we had; the next refresh tries again
        for i, tenant in enumerate(tenants):
            state, device = (v.decode() if v else "" for v in replies[2 * i + 1])
            self.keep(tenant, replies[2 * i], {"state": state, "device": device})

    def keep(self, tenant: str, record_raw: dict[bytes, bytes], session: dict[str, str]) -> None:
        """Remember an owned tenant: its record (an HGETALL reply) and its session's
        state and device (a take-over reads both anyway: ``SessionStore.take_over``)."""
        with self._lock:
            record = self._records.setdefault(tenant, RecoveryRecord(tenant))
            record.fenced_at = None
            if not record_raw:
                return  # Redis lost it (or never had it): keep the last good record
            fields = {k.decode(): v.decode() for k, v in record_raw.items()}
            record.domain = fields.get("domain", "")
            record.created_at = fields.get("created_at", "")
            record.device = session.get("device", "")
            record.live = session.get("state", "") in LIVE_STATES

    def note_connected(self, tenant: str, jid: str) -> None:
        """The tenant's device is connected: remember its JID without a round trip."""
        with self._lock:
            record = self._records.get(tenant)
            if record is not None:
                record.live = True
                if jid:
                    record.device = jid

    def fenced(self, tenant: str) -> None:
        """This worker dropped the tenant: keep its record for ``keep_after_fence_s``."""
        with self._lock:
            record = self._records.get(tenant)
            if record is not None and record.fenced_at is None:
                record.fenced_at = self._clock.monotonic()

    def drop(self, tenant: str) -> None:
        """Forget the tenant (released: it wants no session)."""
        with self._lock:
            self._records.pop(tenant, None)

    def held_elsewhere(self, tenants: list[str]) -> None:
        """Another worker holds these tenants now: its record is newer than a kept one."""
        with self._lock:
            for tenant in tenants:
                record = self._records.get(tenant)
                if record is not None and record.fenced_at is not None:
                    del self._records[tenant]

    def refresh_some(self, owned: list[str]) -> None:
        """Expire old kept records and re-read a batch of the owned ones (on the heartbeat)."""
        now = self._clock.monotonic()
        with self._lock:
            for tenant, record in list(self._records.items()):
                kept = record.fenced_at
                if kept is not None and now - kept > self.keep_after_fence_s:
                    del self._records[tenant]
        if not owned:
            return
        owned = sorted(owned)
        start = self._cursor % len(owned)
        batch = (owned[start:] + owned[:start])[:REFRESH_BATCH]
        self._cursor = start + len(batch)
        self.capture(batch)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    # --- re-seeding --------------------------------------------------------
    def on_boot_marker(self, boot: str) -> int:
        """Re-seed every record if the boot marker changed (Redis lost its data).

        Returns how many tenants this worker re-seeded. The first value seen is
        only remembered; a restart that kept its data keeps the value, and needs
        no re-seeding.
        """
        if self._boot is None or boot == self._boot:
            self._boot = boot
            return 0
        restored = self.restore_all()  # raises on a Redis error: retried next heartbeat
        self._boot = boot
        return restored

    def restore_all(self) -> int:
        """Run restore_tenant.lua for every record kept; returns how many were re-seeded."""
        with self._lock:
            records = list(self._records.values())
        if not records:
            return 0
        results = restore_tenants(self._redis, records, f"{self._clock.time():.3f}")
        restored = results.count(1)
        log.warning("Redis lost its data: re-seeded %d of %d remembered tenants; their API "
                    "keys are not restored: rotate them (wapair tenant rotate)",
                    restored, len(records))
        return restored


def restore_tenants(client: redis.Redis, records: list[RecoveryRecord], now: str) -> list[int]:
    """Run restore_tenant.lua for each record, then add the re-seeded tenants to the
    global indexes; returns each script's result (1 re-seeded, 2 before, 0 left alone).

    The indexes come in a second step because a script may touch only its tenant's
    slot on a Cluster. If that step fails, the next try finds the records re-seeded
    (result 2) and writes the indexes again (each write is idempotent).
    """
    script = scripts_for(client).restore_tenant

    def queue(pipe: Pipeline) -> None:
        for r in records:
            queue_script(pipe, script, [keys.tenant_record(r.tenant), keys.session(r.tenant)],
                         [r.tenant, r.domain, r.created_at, r.device, "1" if r.live else "0",
                          now])

    results = [int(x) for x in execute_pipelined(client, queue, [script])]
    pipe = client.pipeline(transaction=False)
    for r, result in zip(records, results, strict=True):
        if result:
            pipe.sadd(keys.TENANTS, r.tenant)
            if r.domain:
                pipe.hsetnx(keys.DOMAINS, r.domain, r.tenant)
            if r.device and r.live:
                pipe.sadd(keys.ACTIVE, r.tenant)
    pipe.execute()
    return results
