"""Checks the invariants over the sandbox's connection log, the API and Redis; prints the table."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.driver import Ledger
from tests.chaos.faults import KINDS, REDIS_FAULTS, SENTINEL_KINDS, Fault

INF = math.inf
GRACEFUL_HANDOVER_S = 3.0
#: A banned tenant's owner resumes at the first maintenance tick (0.2 s) after the
#: expiry; this much after it (the connection opened) is the bound, loaded machine included.
BAN_RESUME_S = 3.0


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    recoveries: dict[str, list[float]] = field(default_factory=dict)  # fault kind -> seconds
    overlaps: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0

    def fail(self, message: str) -> None:
        self.violations.append(message)


def _end(conn: dict[str, Any]) -> float:
    return float(conn["ended_at"]) if conn["ended_at"] is not None else INF


def _pause_of(client: str, at: float, faults: list[Fault], slack: float) -> Fault | None:
    """The SIGSTOP fault that had ``client`` paused at ``at`` (plus ``slack`` after SIGCONT)."""
    return next((f for f in faults if f.kind == "sigstop" and client in f.clients
                 and f.started_at <= at <= f.ended_at + slack), None)


def check_connections(conns: list[dict[str, Any]], conflicts: list[dict[str, Any]],
                      faults: list[Fault], ttl_s: float, report: Report) -> None:
    """One live connection per tenant at every instant, with no exception.

    A paused worker's connection used to be allowed to overlap its successor's until
    the server replaced it (``stream_replaced``): the client lived in the paused
    process. It lives in a connection host now, which drops it by itself before the
    lease could go elsewhere, so every overlap is a violation, paused owner or not.
    """
    for conn in conns:
        if conn["end_reason"] == "device_removed":
            report.fail(f"device_removed: connection {conn['id']} of {conn['tenant']}")
    for conflict in conflicts:
        if conflict["kind"] == "same_account":
            report.fail(f"two devices of one account online: {conflict}")
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for conn in sorted(conns, key=lambda c: (c["started_at"], c["id"])):
        by_tenant.setdefault(conn["tenant"], []).append(conn)
    for tenant, rows in by_tenant.items():
        for i, old in enumerate(rows):
            for new in rows[i + 1:]:
                if new["started_at"] >= _end(old):
                    continue
                paused = _pause_of(old["client"], new["started_at"], faults, 0) is not None
                kind = "during_pause" if paused else "live"
                report.overlaps[kind] = report.overlaps.get(kind, 0) + 1
                report.fail(f"overlap on {tenant}{' (owner paused)' if paused else ''}: "
                            f"{old['id']} ({old['client']}) still live when {new['id']} "
                            f"({new['client']}) opened")


def measure_recoveries(conns: list[dict[str, Any]], faults: list[Fault], ledger: Ledger,
                       ttl_s: float, report: Report) -> None:
    """Per interrupted connected session: how long until the tenant had a connection again."""
    resets = {}
    for tenant, kind, at in ledger.commands:
        if kind in ("reset", "pair"):
            resets.setdefault(tenant, []).append(at)
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for conn in sorted(conns, key=lambda c: (c["started_at"], c["id"])):
        by_tenant.setdefault(conn["tenant"], []).append(conn)
    for tenant, rows in by_tenant.items():
        # A resume the sandbox refused for a ban is no connection: the tenant has none
        # until the ban is over.
        rows = [c for c in rows if not _refused_by_ban(c, faults)]
        for old, new, ended in _interrupted(rows, resets.get(tenant, [])):
            report.reconnects += 1
            ban = _ban_of(tenant, ended, faults)
            if ban is not None:
                _measure_ban(ban, new, faults, ledger, ttl_s, report)
                continue
            fault = _attribute(old, ended, faults, ttl_s)
            started = fault.started_at if fault and fault.kind == "sigstop" else ended
            gap = max(0.0, new["started_at"] - started)
            kind = fault.kind if fault else "other"
            report.recoveries.setdefault(kind, []).append(gap)
            # After a Redis restart no lease is granted for one TTL, by design.
            frozen = any(f.kind in REDIS_FAULTS and f.started_at <= ended <= f.ended_at + ttl_s
                         for f in faults)
            if kind == "sigterm_rolling" and gap > GRACEFUL_HANDOVER_S and not frozen:
                report.fail(f"graceful handover of {tenant} took {gap:.2f} s")
            if kind == "sigkill" and gap > ttl_s + 5:
                report.fail(f"failover of {tenant} after SIGKILL took {gap:.2f} s")
            if fault is not None and kind == "primary_kill" and gap > (
                    fault.ended_at - fault.started_at) + ttl_s + 5:
                # issue 16: promotion + TTL + 5 s (the fault lasts until the promotion and
                # the old primary's return as a replica)
                report.fail(f"{tenant} connected again {gap:.2f} s after a primary kill")


def _interrupted(rows: list[dict[str, Any]], resets: list[float]
                 ) -> Iterator[tuple[dict[str, Any], dict[str, Any], float]]:
    """(old, new, when old ended) for each connected session of one tenant's ``rows``
    that ended and was resumed on the same device, but not by the driver's reset."""
    for old, new in zip(rows, rows[1:], strict=False):
        if old["device"] is None or old["end_reason"] in (None, "pair_515", "pairing_timeout"):
            continue
        if new["mode"] != "resume" or new["device"] != old["device"]:
            continue
        ended = min(_end(old), new["started_at"])
        if any(old["started_at"] <= at <= ended + 0.5 for at in resets):
            continue  # the driver reset it: not an interruption
        yield old, new, ended


def _refused_by_ban(conn: dict[str, Any], faults: list[Fault]) -> bool:
    """A resume the sandbox ended at once because its device was banned (opened during
    a ban; the connection a ban closed opened before it)."""
    return conn["end_reason"] == "temporary_ban" and any(
        f.kind == "temporary_ban" and f.jid == conn["device"]
        and f.started_at <= conn["started_at"] <= f.until + 0.5 for f in faults)


def _ban_of(tenant: str, ended: float, faults: list[Fault]) -> Fault | None:
    """The ban of ``tenant`` in force when its connection ended at ``ended``."""
    return next((f for f in faults if f.kind == "temporary_ban" and f.tenant == tenant
                 and f.started_at - 0.5 <= ended <= f.until), None)


def _driven(tenant: str, since: float, until: float, ledger: Ledger) -> bool:
    """Whether the driver sent ``tenant`` a command between ``since`` and ``until``."""
    return any(t == tenant and since - 0.5 <= at <= until for t, _, at in ledger.commands)


def _moved(ban: Fault, until: float, faults: list[Fault]) -> bool:
    """Whether a fault that can end the owner's session (a new session meets the ban
    once more, or a take-over waits for a grant) ran between the ban's start and
    ``until``. Only an overlap counts: in the short profile the ban comes 2-4 s after
    a Redis restart, and a window stretched by its TTL would excuse everything."""
    return any(f.kind not in ("temporary_ban", "duplicates") and f.started_at <= until
               and f.ended_at >= ban.started_at for f in faults)


def _measure_ban(ban: Fault, new: dict[str, Any], faults: list[Fault], ledger: Ledger,
                 ttl_s: float, report: Report) -> None:
    """A ban's recovery runs from its expiry: waiting it out is the product's promise,
    not a failure, so only the time after it counts."""
    gap = max(0.0, new["started_at"] - ban.until)
    report.recoveries.setdefault("temporary_ban", []).append(gap)
    excused = (_driven(ban.tenant, ban.started_at, new["started_at"], ledger)
               or _moved(ban, new["started_at"], faults))
    if gap > BAN_RESUME_S and not excused:
        report.fail(f"{ban.tenant} connected again {gap:.2f} s after its ban's expiry")


def check_bans(conns: list[dict[str, Any]], faults: list[Fault], ledger: Ledger,
               ttl_s: float, report: Report) -> None:
    """A temporary ban pauses its tenant: the ban ends its connection, nothing is
    admitted and no resume is tried while it lasts (as tests/e2e/test_messages.py
    asserts: the banned connection, then none until the expiry), and the tenant is
    connected again after it (how soon: ``measure_recoveries``). A driver's command or
    another fault's take-over during the ban may meet the ban once more: not the
    owner's doing."""
    for ban in (f for f in faults if f.kind == "temporary_ban" and f.jid):
        rows = sorted((c for c in conns if c["tenant"] == ban.tenant),
                      key=lambda c: (c["started_at"], c["id"]))
        later = max(ban.until + BAN_RESUME_S, ban.ended_at)
        excused = (_driven(ban.tenant, ban.started_at, later, ledger)
                   or _moved(ban, later, faults))
        hit = [c for c in rows if c["device"] == ban.jid and c["end_reason"] == "temporary_ban"
               and c["started_at"] < ban.started_at <= _end(c) <= ban.ended_at]
        if not hit and not excused:
            report.fail(f"the ban of {ban.tenant} ended no connection of {ban.jid}")
        owner = hit[0]["client"] if hit else None
        for conn in rows:
            if not ban.started_at <= conn["started_at"] < ban.until:
                continue
            if conn["device"] == ban.jid and conn["end_reason"] != "temporary_ban":
                report.fail(f"{ban.tenant}: connection {conn['id']} admitted while its "
                            "device was banned")
            elif conn["client"] == owner and not (
                    _driven(ban.tenant, ban.started_at, conn["started_at"], ledger)
                    or _moved(ban, conn["started_at"], faults)):
                # The banned owner tried again on its own. Another process's try is a
                # take-over, which meets the ban once and waits like the owner did.
                what = "a resume" if conn["mode"] == "resume" else f"a {conn['mode']}"
                report.fail(f"{ban.tenant} tried {what} (connection {conn['id']}, "
                            f"{conn['end_reason']}) while its ban lasted")
        back = [c for c in rows if c["started_at"] >= ban.started_at
                and not _refused_by_ban(c, faults)]
        if not back and not excused:
            report.fail(f"{ban.tenant} never connected again after its ban")


def _attribute(conn: dict[str, Any], ended: float, faults: list[Fault], ttl_s: float
               ) -> Fault | None:
    for fault in faults:
        hit = conn["client"] in fault.clients or fault.kind in REDIS_FAULTS
        if fault.kind == "sigstop" and conn["started_at"] > fault.started_at:
            # Opened after the pause began (by the resumed worker): the pause did not
            # interrupt it. Counted as one, a pairing made just after SIGCONT and handed
            # over by a rolling restart within the TTL read as a 9.6 s pause recovery.
            continue
        if hit and fault.started_at - 1 <= ended <= fault.ended_at + ttl_s:
            return fault
    return None


def check_pairings(ledger: Ledger, final: dict[str, dict[str, Any]], faults: list[Fault],
                   timeout_s: float, grace_s: float, ttl_s: float, report: Report) -> None:
    """Every accepted pairing ended, in time: ``timeout_s`` plus ``grace_s``, the longer of
    one cleanup interval and (owner dead or paused at the deadline) its lease lapsing."""
    for record in ledger.pairings.values():
        status, ended = record.status, record.ended_at
        current = final.get(record.tenant, {}).get("pairing") or {}
        if not status and current.get("id") == record.pairing_id:
            status = current.get("status", "")
            ended = current.get("ended_at")
        if status not in ("paired", "expired", "failed", "cancelled"):
            report.fail(f"pairing {record.pairing_id} of {record.tenant} never ended ({status})")
            continue
        # 1 s of slack: the driver polls the status, it does not see the instant.
        # A Redis restart during the pairing adds the one-TTL grant freeze, which runs
        # from the restart: after several restarts in a row (long runs) the pairing's
        # end can wait for the last one's freeze, then one grace (claim or cleanup).
        restarts = [f.ended_at for f in faults if f.kind in REDIS_FAULTS
                    and record.accepted_at <= f.ended_at
                    and (ended is None or f.started_at <= ended)]
        bound = timeout_s + grace_s + 1
        if restarts:
            bound = max(bound + ttl_s, max(restarts) + ttl_s + grace_s + 1 - record.accepted_at)
        if ended is not None and ended - record.accepted_at > bound:
            report.fail(f"pairing {record.pairing_id} ended {ended - record.accepted_at:.1f} s "
                        f"after it was accepted")


def check_final(final: dict[str, dict[str, Any]], conns: list[dict[str, Any]],
                ledger: Ledger, queues: dict[str, int], report: Report) -> None:
    """At rest: connected means exactly one live connection, nothing stuck, nothing queued."""
    for tenant, st in final.items():
        live = [c for c in conns if c["tenant"] == tenant and c["ended_at"] is None]
        if st["state"] == "connected":
            if len(live) != 1:
                report.fail(f"{tenant} connected with {len(live)} live connections")
        elif st["state"] in ("idle", "failed", "logged_out"):
            if live:
                report.fail(f"{tenant} is {st['state']} but has live connections {live}")
            if st["state"] != "idle":
                report.fail(f"{tenant} ended {st['state']}: {st['last_error']}")
        else:
            report.fail(f"{tenant} is still {st['state']} at rest")
        if ledger.last_seen.get(tenant) == "connected" and st["state"] != "connected":
            report.fail(f"{tenant} was connected but is {st['state']} at the end")
    for name, waiting in queues.items():
        if waiting:
            report.fail(f"{waiting} command(s) never run: {name}")
    for error in ledger.server_errors:
        report.fail(f"server error: {error}")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def table(faults: list[Fault], ledger: Ledger, report: Report, duration_s: float) -> str:
    """The summary the suite prints (and docs/reliability.md quotes)."""
    lines = [f"chaos run: {duration_s:.0f} s, {len(ledger.last_seen)} tenants",
             f"{'fault':<16}{'injected':>9}{'sessions hit':>14}{'max rec. s':>12}"
             f"{'p99 rec. s':>12}"]
    for kind in [*KINDS, *SENTINEL_KINDS, "other"]:
        hits = report.recoveries.get(kind, [])
        injected = sum(f.kind == kind for f in faults) if kind != "other" else 0
        if not injected and not hits:
            continue
        worst = f"{max(hits):.2f}" if hits else "-"
        p99 = f"{_p99(hits):.2f}" if hits else "-"
        lines.append(f"{kind:<16}{injected:>9}{len(hits):>14}{worst:>12}{p99:>12}")
    every = [x for v in report.recoveries.values() for x in v]
    statuses: dict[str, int] = {}
    for record in ledger.pairings.values():
        statuses[record.status or "open"] = statuses.get(record.status or "open", 0) + 1
    lines += [
        f"pairings accepted: {len(ledger.pairings)} "
        + " ".join(f"{k}={v}" for k, v in sorted(statuses.items())),
        f"commands accepted: {len(ledger.commands)}; 503 answers: {ledger.unavailable}",
        f"reconnects after a fault: {report.reconnects}; all faults max "
        f"{max(every, default=0):.2f} s, p99 {_p99(every) if every else 0:.2f} s",
        "overlaps: " + (", ".join(f"{k}={v}" for k, v in sorted(report.overlaps.items()))
                        or "none"),
        f"violations: {len(report.violations)}",
    ]
    return "\n".join(lines)
