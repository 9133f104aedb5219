"""The chaos message checks on hand-made ledgers and outcomes (no cluster): each can fail."""

from __future__ import annotations

from typing import Any

from tests.chaos.checker import Report
from tests.chaos.faults import Fault
from tests.chaos.message_checks import check_messages, owner_deaths
from tests.chaos.messages import Inbound, MessageLedger, MessageOutcome, Outbound

CONTACT = "628000107"


def sent(i: int, tenant: str = "t1") -> Outbound:
    return Outbound(tenant, f"m_{i}", f"k{i}", CONTACT, f"text {i}", 100.0 + i, 1)


def conn(client: str, started: float, ended: float | None, tenant: str = "t1"
         ) -> dict[str, Any]:
    return {"tenant": tenant, "client": client, "started_at": started, "ended_at": ended}


def check(ledger: MessageLedger, outcome: MessageOutcome,
          conns: list[dict[str, Any]] | None = None, faults: list[Fault] | None = None
          ) -> list[str]:
    report = Report()
    check_messages(ledger, outcome, conns or [], faults or [], 10.0, report)
    return report.violations


def delivered(ledger: MessageLedger) -> MessageOutcome:
    outcome = MessageOutcome(statuses={m.message_id: "delivered" for m in ledger.outbound})
    outcome.inboxes = {CONTACT: [{"text": m.text} for m in ledger.outbound]}
    return outcome


def test_delivered_once_each_passes() -> None:
    ledger = MessageLedger(outbound=[sent(1), sent(2)])
    assert check(ledger, delivered(ledger)) == []


def test_a_message_in_an_inbox_twice_fails_even_if_the_sandbox_missed_it() -> None:
    ledger = MessageLedger(outbound=[sent(1)])
    outcome = delivered(ledger)
    outcome.inboxes[CONTACT].append({"text": "text 1"})
    [violation, _] = check(ledger, outcome)
    assert "2 times" in violation


def test_a_sandbox_violation_fails() -> None:
    ledger = MessageLedger(outbound=[sent(1)])
    outcome = delivered(ledger)
    outcome.violations = [{"kind": "duplicate_delivery", "to": CONTACT}]
    assert len(check(ledger, outcome)) == 1


def test_a_message_still_queued_after_the_drain_fails() -> None:
    ledger = MessageLedger(outbound=[sent(1)])
    outcome = delivered(ledger)
    outcome.statuses["m_1"], outcome.inboxes[CONTACT] = "queued", []
    assert ["still queued" in v for v in check(ledger, outcome)] == [True]


def test_failed_but_delivered_fails() -> None:
    ledger = MessageLedger(outbound=[sent(1)])
    outcome = delivered(ledger)
    outcome.statuses["m_1"] = "failed"
    assert ["failed but was delivered" in v for v in check(ledger, outcome)] == [True]


def test_unknown_is_allowed_once_per_owner_death_and_near_it() -> None:
    ledger = MessageLedger(outbound=[sent(1), sent(2)])
    outcome = delivered(ledger)
    outcome.statuses.update({"m_1": "unknown", "m_2": "unknown"})
    outcome.error_at = {"m_1": 110.2, "m_2": 114.0}
    kill = Fault("sigkill", 110.0, 111.0, ["A"])
    conns = [conn("A", 90.0, 110.5), conn("B", 112.0, None)]
    [two] = check(ledger, outcome, conns, [kill])
    assert two.startswith("t1: 1 unknown message(s) no owner death of its own accounts for")
    outcome.statuses["m_2"] = "delivered"
    assert check(ledger, outcome, conns, [kill]) == []
    assert check(ledger, outcome, conns, []) != [], "no death: no unknown"
    outcome.error_at["m_1"] = 150.0  # long after the death: something else left it
    assert check(ledger, outcome, conns, [kill]) != []


def test_owner_deaths_count_only_faults_on_the_tenants_owner() -> None:
    conns = [conn("A", 90.0, 120.0), conn("B", 120.0, None), conn("C", 90.0, None, "t2")]
    faults = [Fault("sigkill", 100.0, 101.0, ["A"]), Fault("sigkill", 130.0, 131.0, ["C"]),
              Fault("redis_restart", 140.0, 142.0), Fault("duplicates", 150.0, 151.0),
              Fault("primary_kill", 160.0, 163.0)]
    # t1: its owner A's kill, the restart and the primary kill (every owner fences, and
    # the promotion may lose a send's outcome); t2: C's kill, the restart, the kill.
    assert [f.started_at for f in owner_deaths("t1", conns, faults)] == [100.0, 140.0, 160.0]
    assert [f.started_at for f in owner_deaths("t2", conns, faults)] == [130.0, 140.0, 160.0]


def test_inbound_is_lost_unless_recorded_or_held_for_a_tenant_with_no_connection() -> None:
    ledger = MessageLedger(inbound=[Inbound("t1", "W1", "629", 1.0),
                                    Inbound("t1", "W2", "629", 1.0),
                                    Inbound("t2", "W3", "629", 1.0)])
    outcome = MessageOutcome(in_history={"W1"}, recorded={"W1"}, held={"W2", "W3"},
                             live={"t2"})
    # W2: held for t1, which ended with no connection: pending. W3: held though t2 is live.
    assert check(ledger, outcome) == ["inbound in_W3 to t2 lost (still held)"]
    outcome.held = {"W3"}
    assert check(ledger, outcome) == ["inbound in_W2 to t1 lost (acked, not recorded)",
                                      "inbound in_W3 to t2 lost (still held)"]
    outcome.held, outcome.recorded = set(), {"W1", "W2", "W3"}
    assert check(ledger, outcome) == ["inbound in_W2 of t1 recorded but its event is not in "
                                      "the history", "inbound in_W3 of t2 recorded but its "
                                      "event is not in the history"]
    outcome.trimmed = {"t1": 5.0, "t2": 5.0}  # longer histories than the check reads
    assert check(ledger, outcome) == []


def test_unresolved_posts_and_server_errors_fail() -> None:
    ledger = MessageLedger(unresolved=["k9"], server_errors=["POST messages k8: 500"])
    assert len(check(ledger, MessageOutcome())) == 2
