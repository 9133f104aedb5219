"""Operator subcommands of ``wapair``: ``status``, ``reset`` and ``drain``.

They talk to Redis and the broker with the same settings as the services
(``REDIS_URL`` ...), and change state only the way the API does: ``reset``
queues the command with ``SessionStore.enqueue`` and kicks the owner;
``drain`` asks a worker to stop (Celery remote control), which runs its
SessionHost's warm shutdown: every session is closed, its lease released and a
claim kicked, so other workers resume the tenants at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared import keys
from shared.codec import lease_owner
from shared.codec import text as _text
from shared.config import Settings, load_settings
from shared.errors import Conflict, NotFound, StoreUnavailable
from shared.metrics import WORKER_FRESH_S
from shared.redis_client import connect_redis
from shared.state import LIVE_STATES, SessionStore
from shared.taskqueue import create_celery, send_kick
from shared.tenants import TenantRegistry, validate_tenant_id


@dataclass(frozen=True)
class TenantRow:
    """One line of ``wapair status``."""

    tenant: str
    state: str
    pairing: str
    owner: str
    lease_age_s: float | None
    fence: str
    mail: int
    updated_at: float | None
    last_error: str


def read_rows(client: redis.Redis, settings: Settings, tenants: list[str]) -> list[TenantRow]:
    """The state, owner and lease age of ``tenants``, in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        pipe.hmget(keys.session(tenant), "state", "updated_at", "last_error")
        pipe.hget(keys.pairing(tenant), "status")
        pipe.get(keys.lease(tenant))
        pipe.pttl(keys.lease(tenant))
        pipe.get(keys.fence(tenant))
        pipe.llen(keys.mailbox(tenant))
    try:
        replies = pipe.execute()
    except redis.RedisError as e:
        raise StoreUnavailable("could not reach Redis to read the tenants") from e
    rows = []
    for i, tenant in enumerate(tenants):
        (state, updated, error), pairing, lease, pttl, fence, mail = replies[6 * i: 6 * i + 6]
        owner = lease_owner(lease)
        age = settings.lease_ttl_s - pttl / 1000 if lease and pttl and pttl > 0 else None
        rows.append(TenantRow(
            tenant, _text(state) or "idle", _text(pairing) or "-", owner or "-", age,
            _text(fence) or "-", int(mail), float(updated) if updated else None, _text(error),
        ))
    return rows


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    client = connect_redis(settings)
    registry = TenantRegistry(client)
    tenants = [registry.require(validate_tenant_id(args.tenant))] if args.tenant else registry.all()
    rows = read_rows(client, settings, tenants)
    now = time.time()
    table = [("TENANT", "STATE", "PAIRING", "OWNER", "LEASE_AGE", "FENCE", "MAIL", "UPDATED")]
    for r in rows:
        table.append((
            r.tenant, r.state, r.pairing, r.owner,
            f"{r.lease_age_s:.1f}s" if r.lease_age_s is not None else "-", r.fence, str(r.mail),
            f"{now - r.updated_at:.0f}s ago" if r.updated_at else "-",
        ))
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if args.tenant and rows and rows[0].last_error:
        print(f"last_error: {rows[0].last_error}")
    return 0


def _reset(args: argparse.Namespace) -> int:
    settings = load_settings()
    client = connect_redis(settings)
    tenant = TenantRegistry(client).require(validate_tenant_id(args.tenant))
    accepted = SessionStore(client).enqueue(tenant, "reset")
    send_kick(create_celery(settings), tenant, accepted.owner or None)
    print(f"reset {accepted.command.id} queued for {tenant} "
          f"(owner: {accepted.owner or 'none yet; any worker will claim it'})")
    return 0


def owned_by(client: redis.Redis, worker: str) -> dict[str, str]:
    """Every tenant whose lease ``worker`` holds, with the tenant's state."""
    tenants = sorted(_text(t) for t in client.smembers(keys.TENANTS))
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        pipe.get(keys.lease(tenant))
        pipe.hget(keys.session(tenant), "state")
    replies = pipe.execute()
    return {
        tenant: _text(replies[2 * i + 1]) or "idle"
        for i, tenant in enumerate(tenants)
        if lease_owner(replies[2 * i]) == worker
    }


def drain_worker(
    client: redis.Redis,
    settings: Settings,
    worker: str,
    *,
    timeout_s: float,
    stop: Callable[[str], None],
    say: Callable[[str], None] = print,
    poll_s: float = 0.5,
    force: bool = False,
) -> bool:
    """Stop ``worker`` and wait until every tenant it owned is owned elsewhere (or idle)."""
    if client.zscore(keys.WORKERS, worker) is None:
        workers: list[bytes] = client.zrange(keys.WORKERS, 0, -1)  # type: ignore[assignment]
        known = ", ".join(sorted(_text(w) for w in workers)) or "none"
        raise NotFound(f"no worker {worker} has sent a heartbeat (known: {known})")
    tenants = owned_by(client, worker)
    others = client.zcount(keys.WORKERS, time.time() - WORKER_FRESH_S, "+inf") - (
        1 if (client.zscore(keys.WORKERS, worker) or 0) >= time.time() - WORKER_FRESH_S else 0)
    if tenants and others < 1 and not force:
        raise Conflict(f"{worker} is the only live worker: its {len(tenants)} tenant(s) would "
                       "have no one to go to (start another worker, or use --force)")
    say(f"draining {worker}: {len(tenants)} tenant(s) to hand over")
    stop(worker)
    deadline = time.monotonic() + timeout_s
    reported = -1
    while True:
        rows = {r.tenant: r for r in read_rows(client, settings, sorted(tenants))}
        waiting = [t for t, r in rows.items()
                   if r.owner == worker or (r.owner == "-" and r.state in LIVE_STATES)]
        gone = client.zscore(keys.WORKERS, worker) is None
        if len(waiting) != reported:
            reported = len(waiting)
            say(f"  {len(tenants) - len(waiting)}/{len(tenants)} handed over"
                + ("" if gone else f"; {worker} still running"))
        if gone and not waiting:
            for tenant, row in sorted(rows.items()):
                say(f"  {tenant}: {row.state}, owner {row.owner}")
            say(f"{worker} drained")
            return True
        if time.monotonic() > deadline:
            say(f"timed out after {timeout_s:g}s; still waiting: {', '.join(waiting) or worker}")
            return False
        time.sleep(poll_s)


def _drain(args: argparse.Namespace) -> int:
    settings = load_settings()
    app = create_celery(settings)

    def stop(worker: str) -> None:
        # The worker's warm shutdown runs the SessionHost handover (workers/app.py).
        app.control.shutdown(destination=[worker])

    done = drain_worker(connect_redis(settings), settings, args.worker,
                        timeout_s=args.timeout, stop=stop, force=args.force)
    return 0 if done else 1


def _worker_check(args: argparse.Namespace) -> int:
    client = connect_redis(load_settings())
    try:
        beat = client.zscore(keys.WORKERS, args.worker)
    except redis.RedisError as e:
        raise StoreUnavailable("could not reach Redis to read the heartbeat") from e
    age = time.time() - beat if beat is not None else None
    if age is None or age > args.max_age:
        print(f"{args.worker}: no heartbeat in the last {args.max_age:g}s", file=sys.stderr)
        return 1
    print(f"{args.worker}: heartbeat {age:.1f}s ago")
    return 0


def add_ops_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``status``, ``reset`` and ``drain`` on the ``wapair`` parser."""
    status = sub.add_parser("status", help="a table of tenants: state, owner, lease age, mail")
    status.add_argument("--tenant", help="only this tenant (and its last error)")
    status.set_defaults(func=_status)
    reset = sub.add_parser("reset", help="queue a reset for a tenant, as the API does")
    reset.add_argument("tenant")
    reset.set_defaults(func=_reset)
    drain = sub.add_parser("drain", help="hand a worker's sessions over to others, then stop it")
    drain.add_argument("worker", help="the worker's Celery hostname, e.g. worker1@host")
    drain.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the hand-over (default 60)")
    drain.add_argument("--force", action="store_true",
                       help="stop it even when no other worker is alive to take its tenants")
    drain.set_defaults(func=_drain)
    check = sub.add_parser("worker-check",
                           help="exit 0 if the worker's maintenance loop beat recently (probes)")
    check.add_argument("worker")
    check.add_argument("--max-age", type=float, default=30.0,
                       help="seconds since the last heartbeat (default 30)")
    check.set_defaults(func=_worker_check)

