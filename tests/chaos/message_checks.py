"""The message guarantees, checked over what the chaos run's traffic became.

At most once (no recipient sees a message twice, in the sandbox's own violation log
and in the inboxes), every accepted message finished within the bounded drain,
``unknown`` at most once per tenant per death of its owner, and every inbound message
in the tenant's history (or still held by the server for a tenant that ended with no
connection: WhatsApp would deliver it on the next one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.checker import Report
from tests.chaos.faults import Fault
from tests.chaos.messages import FINISHED, MessageLedger, MessageOutcome

#: Faults after which the tenant's owner may not have recorded a send's outcome.
OWNER_DEATHS = ("sigkill", "sigterm_rolling", "sigstop", "redis_restart", "host_kill",
                "host_stop", "primary_kill")
# Redis going away ends every owner's session (they self-fence), and a promotion may
# lose the write that recorded a send's outcome: a death for every tenant's owner.
REDIS_DEATHS = ("redis_restart", "primary_kill")
SENT = ("sent", "delivered", "read")


@dataclass
class MessageFigures:
    accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unknown_bound: int = 0  # the sum over sending tenants of their owners' deaths
    inbound_sent: int = 0
    inbound_recorded: int = 0
    inbound_held_offline: int = 0
    inbound_lost: int = 0
    during_bans: int = 0  # accepted for a banned tenant while its ban lasted


def owner_deaths(tenant: str, conns: list[dict[str, Any]], faults: list[Fault]) -> list[Fault]:
    """The faults that hit a process holding a connection of ``tenant`` (a host_kill
    counts for every tenant of the worker, not only for the killed host's)."""
    mine = [c for c in conns if c["tenant"] == tenant]
    hits = []
    for fault in faults:
        if fault.kind not in OWNER_DEATHS:
            continue
        for conn in mine:
            ended = conn["ended_at"] if conn["ended_at"] is not None else math.inf
            owner_hit = fault.kind in REDIS_DEATHS or conn["client"] in fault.clients
            if owner_hit and conn["started_at"] <= fault.ended_at and ended >= fault.started_at:
                hits.append(fault)
                break
    return hits


def unexplained_unknowns(unknown_at: list[float], deaths: list[Fault], window_s: float
                         ) -> list[float]:
    """The times of ``unknown`` records no owner death accounts for: each death accounts
    for one, recorded from its start until ``window_s`` after it ended (the next owner
    records it after taking over)."""
    free = sorted(deaths, key=lambda f: f.ended_at)
    left = []
    for at in sorted(unknown_at):
        death = next((f for f in free if f.started_at - 1 <= at <= f.ended_at + window_s), None)
        if death is None:
            left.append(at)
        else:
            free.remove(death)
    return left


def check_messages(ledger: MessageLedger, outcome: MessageOutcome, conns: list[dict[str, Any]],
                   faults: list[Fault], window_s: float, report: Report,
                   commands: list[tuple[str, str, float]] | None = None) -> MessageFigures:
    """``window_s``: how long after a death its unknown may be recorded (a lease TTL and
    a take-over); ``commands``: the driver's (tenant, kind, at), which may end a banned
    tenant's session (and fail its queued sends) on purpose."""
    figures = MessageFigures(accepted=len(ledger.outbound), duplicates=len(outcome.violations))
    for violation in outcome.violations:
        report.fail(f"a recipient got a message twice: {violation}")
    unknown: dict[str, list[float]] = {}
    for m in ledger.outbound:
        status = outcome.statuses.get(m.message_id, "missing")
        figures.statuses[status] = figures.statuses.get(status, 0) + 1
        seen = sum(e["text"] == m.text for e in outcome.inboxes.get(m.to, []))
        if seen > 1:
            figures.duplicates += 1
            report.fail(f"{m.to} has {m.message_id} ({m.tenant}) {seen} times")
        if status not in FINISHED:
            report.fail(f"message {m.message_id} of {m.tenant} still {status} after the drain")
        elif status in SENT and seen != 1:
            report.fail(f"message {m.message_id} of {m.tenant} is {status} but {m.to} has it "
                        f"{seen} times")
        elif status == "failed" and seen:
            report.fail(f"message {m.message_id} of {m.tenant} failed but was delivered")
        elif status == "unknown":
            unknown.setdefault(m.tenant, []).append(outcome.error_at.get(m.message_id, 0.0))
    for tenant in sorted({m.tenant for m in ledger.outbound}):
        deaths = owner_deaths(tenant, conns, faults)
        figures.unknown_bound += len(deaths)
        left = unexplained_unknowns(unknown.get(tenant, []), deaths, window_s)
        if left:
            report.fail(f"{tenant}: {len(left)} unknown message(s) no owner death of its own "
                        f"accounts for (recorded at {left}; {len(deaths)} death(s))")
    figures.during_bans = _check_banned(ledger, outcome, faults, commands or [], report)
    for key in ledger.unresolved:
        report.fail(f"POST of {key} never got an answer in time (retried with its key)")
    for error in ledger.server_errors:
        report.fail(f"server error: {error}")
    _check_inbound(ledger, outcome, figures, report)
    return figures


def _check_banned(ledger: MessageLedger, outcome: MessageOutcome, faults: list[Fault],
                  commands: list[tuple[str, str, float]], report: Report) -> int:
    """A ban pauses the tenant's outbox: what was posted to it while the ban lasted is
    not ``failed`` (unless the driver reset the tenant meanwhile) and, if sent, sent
    after the expiry. A ban is no owner death: an ``unknown`` there is not excused
    (``OWNER_DEATHS``). Returns how many messages were posted during bans."""
    during = 0
    for ban in (f for f in faults if f.kind == "temporary_ban" and f.jid):
        ended_on_purpose = any(t == ban.tenant and kind in ("reset", "pair")
                               and at >= ban.started_at - 0.5 for t, kind, at in commands)
        for m in ledger.outbound:
            # posted_at: the API cannot have taken it, nor the owner sent it, before.
            if m.tenant != ban.tenant or not ban.started_at <= m.posted_at < ban.until:
                continue
            during += 1
            status = outcome.statuses.get(m.message_id, "missing")
            if status == "failed":
                code = outcome.errors.get(m.message_id)
                if not (code == "not_connected" and ended_on_purpose):
                    report.fail(f"message {m.message_id} of {m.tenant}, posted during its "
                                f"ban, failed ({code})")
            elif status in SENT:
                sent_at = outcome.sent_at.get(m.message_id)
                if sent_at is None or sent_at < ban.until:
                    report.fail(f"message {m.message_id} of {m.tenant} sent at {sent_at}, "
                                f"before its ban's expiry at {ban.until:.3f}")
    return during


def _check_inbound(ledger: MessageLedger, outcome: MessageOutcome, figures: MessageFigures,
                   report: Report) -> None:
    figures.inbound_sent = len(ledger.inbound)
    for m in ledger.inbound:
        if m.wa_message_id in outcome.in_history:
            figures.inbound_recorded += 1
        elif m.wa_message_id in outcome.recorded:
            figures.inbound_recorded += 1
            if m.tenant not in outcome.trimmed:
                report.fail(f"inbound {m.message_id} of {m.tenant} recorded but its event is "
                            "not in the history")
        elif m.wa_message_id in outcome.held and m.tenant not in outcome.live:
            figures.inbound_held_offline += 1  # the server delivers it on the next connection
        else:
            figures.inbound_lost += 1
            where = "still held" if m.wa_message_id in outcome.held else "acked, not recorded"
            report.fail(f"inbound {m.message_id} to {m.tenant} lost ({where})")


def message_table(figures: MessageFigures, ledger: MessageLedger, outcome: MessageOutcome
                  ) -> str:
    """The message lines of the chaos summary."""
    by_status = " ".join(f"{k}={v}" for k, v in sorted(figures.statuses.items()))
    codes: dict[str, int] = {}
    for code in outcome.errors.values():
        codes[code] = codes.get(code, 0) + 1
    if codes:
        by_status += " (" + " ".join(f"{k}={v}" for k, v in sorted(codes.items())) + ")"
    sent = sum(figures.statuses.get(s, 0) for s in SENT)
    refused = " ".join(f"{k}={v}" for k, v in sorted(ledger.refused.items())) or "none"
    return "\n".join([
        f"messages accepted: {figures.accepted}, sent: {sent}, unknown: "
        f"{figures.statuses.get('unknown', 0)} (each explained by an owner death of its own; "
        f"deaths of the senders' owners: {figures.unknown_bound}), duplicates: "
        f"{figures.duplicates}",
        f"  by status: {by_status}; refused: {refused}; POSTs retried with their key: "
        f"{ledger.retried_same_key}; drained in {outcome.drained_in_s:.1f} s",
        f"inbound sent: {figures.inbound_sent}, recorded: {figures.inbound_recorded}, held for "
        f"tenants with no connection: {figures.inbound_held_offline}, lost: "
        f"{figures.inbound_lost}",
        f"posted to banned tenants during their bans: {figures.during_bans}",
    ])
