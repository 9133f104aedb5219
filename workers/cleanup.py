"""Beat's cleanup sweep: repairs what crashes and lost kicks can leave behind.

Run by any one worker per period (``wapair.cleanup``); every step is safe to
run twice or concurrently, and never touches a tenant that someone owns:

- a pairing past its deadline with no owner ends ``expired`` (a pairing whose
  owner lives is expired by that owner);
- a QR code left after its pairing ended is deleted;
- the ``wa:active`` hint is repaired both ways: a tenant that wants an owner
  (live state, or commands waiting) is added back, so the claim scans find
  it; one that wants nothing and has no owner is dropped;
- the kick queue of a worker whose heartbeat stopped long ago is deleted with
  its routing entry (its tenants' mail is found by the new owners' mailbox
  checks, not through that queue), and the worker leaves ``keys.WORKERS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from shared import keys
from shared.clock import Clock
from shared.config import Settings
from shared.scripts import scripts_for
from shared.state import error_json
from shared.state_machine import LIVE_STATES, SessionState
from shared.taskqueue import worker_queue

log = logging.getLogger(__name__)

#: kombu's Redis transport: the routing table of an exchange, and the extra
#: lists a queue gets for its priority steps.
_KOMBU_BINDING = "_kombu.binding.{}"
_KOMBU_BINDING_PERMANENT = "_kombu.binding_permanent.{}"
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (3, 6, 9)


@dataclass
class CleanupReport:
    """What one sweep did."""

    expired: list[str] = field(default_factory=list)
    qr_trimmed: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    dead_workers: list[str] = field(default_factory=list)


def dead_after_s(settings: Settings) -> float:
    """A worker silent this long is gone: far beyond any lease it could still hold."""
    return max(60.0, 10 * settings.lease_ttl_s)


def sweep(client: redis.Redis, settings: Settings, clock: Clock) -> CleanupReport:
    """One cleanup round over every tenant and worker."""
    report = CleanupReport()
    # Two SMEMBERS, not SUNION: the two sets hash to different slots of a Cluster.
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.TENANTS)
    pipe.smembers(keys.ACTIVE)
    registered, active_hint = pipe.execute()
    tenants = sorted(m.decode() for m in registered | active_hint)
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        pipe.hget(keys.session(tenant), "state")
        pipe.exists(keys.lease(tenant))
        pipe.llen(keys.mailbox(tenant))
        pipe.llen(keys.inflight(tenant))
        pipe.sismember(keys.ACTIVE, tenant)
        pipe.exists(keys.qr(tenant))
    replies = pipe.execute() if tenants else []
    script = scripts_for(client).cleanup_tenant
    now = clock.time()
    for i, tenant in enumerate(tenants):
        raw_state, leased, mail, inflight, active, qr = replies[i * 6:(i + 1) * 6]
        state = raw_state.decode() if raw_state else SessionState.IDLE
        pairing = state == SessionState.PAIRING
        if (pairing and not leased) or (not pairing and qr):
            error = error_json("pairing_expired",
                               "the pairing ended with no worker to run it", now)
            done = script(keys=[keys.session(tenant), keys.pairing(tenant), keys.lease(tenant),
                                keys.qr(tenant), keys.fence(tenant), keys.events(tenant),
                                keys.pair_code(tenant), keys.webhook(tenant),
                                keys.webhook_pending(tenant)],
                          args=[f"{now:.3f}", error, settings.events_maxlen])
            done = done.decode() if isinstance(done, bytes) else done
            if done == "expired":
                report.expired.append(tenant)
                state = SessionState.IDLE
            elif done == "qr_trimmed":
                report.qr_trimmed.append(tenant)
        wants = state in LIVE_STATES or mail or inflight
        if wants and not active:
            client.sadd(keys.ACTIVE, tenant)
            report.reactivated.append(tenant)
        elif not wants and active and not leased:
            client.srem(keys.ACTIVE, tenant)
            report.deactivated.append(tenant)
    report.dead_workers = forget_dead_workers(client, now - dead_after_s(settings))
    if any(vars(report).values()):
        log.info("cleanup: %s", {k: len(v) for k, v in vars(report).items() if v})
    return report


def forget_dead_workers(client: redis.Redis, silent_since: float) -> list[str]:
    """Delete the kick queues of workers silent since ``silent_since``; return their ids."""
    silent: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
        keys.WORKERS, "-inf", silent_since)
    dead = [m.decode() for m in silent]
    for worker in dead:
        name = worker_queue(worker).name
        queue_keys = [name, _KOMBU_BINDING.format(name), _KOMBU_BINDING_PERMANENT.format(name)]
        queue_keys += [f"{name}{_KOMBU_PRIORITY_SEP}{step}" for step in _KOMBU_PRIORITY_STEPS]
        pipe = client.pipeline(transaction=True)
        pipe.delete(*queue_keys)
        pipe.zrem(keys.WORKERS, worker)
        pipe.execute()
        log.info("cleanup: worker %s is gone; its kick queue is deleted", worker)
    return dead
