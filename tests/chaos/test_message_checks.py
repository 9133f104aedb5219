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


def banned() -> Fault:
    """t1's device banned at 110.0 until 113.0."""
    return Fault("temporary_ban", 110.0, 110.2, tenant="t1", jid="d1", until=113.0)


def posted(i: int, at: float, tenant: str = "t1") -> Outbound:
    return Outbound(tenant, f"m_{i}", f"k{i}", CONTACT, f"text {i}", at + 0.05, 1, at)


def test_a_message_posted_during_a_ban_is_sent_after_its_expiry() -> None:
    ledger = MessageLedger(outbound=[posted(1, 110.5), posted(2, 109.0), posted(3, 111.0, "t2")])
    outcome = delivered(ledger)
    outcome.sent_at = {"m_1": 113.4, "m_2": 109.1, "m_3": 111.1}
    report = Report()
    figures = check_messages(ledger, outcome, [], [banned()], 10.0, report)
    assert report.violations == [] and figures.during_bans == 1
    outcome.sent_at["m_1"] = 112.9  # sent while the ban lasted
    [violation] = check(ledger, outcome, [], [banned()])
    assert violation.startswith("message m_1 of t1 sent at 112.9, before its ban's expiry")


def test_a_message_posted_during_a_ban_fails_only_if_the_driver_reset_the_tenant() -> None:
    ledger = MessageLedger(outbound=[posted(1, 110.5)])
    outcome = MessageOutcome(statuses={"m_1": "failed"}, errors={"m_1": "not_connected"})
    [violation] = check(ledger, outcome, [], [banned()])
    assert violation == "message m_1 of t1, posted during its ban, failed (not_connected)"
    report = Report()
    check_messages(ledger, outcome, [], [banned()], 10.0, report, [("t1", "reset", 111.0)])
    assert report.violations == []


def test_a_ban_is_no_owner_death_so_an_unknown_in_it_fails() -> None:
    ledger = MessageLedger(outbound=[posted(1, 110.5)])
    outcome = MessageOutcome(statuses={"m_1": "unknown"}, error_at={"m_1": 110.6})
    conns = [conn("A", 90.0, 110.0), conn("A", 113.3, None)]
    assert owner_deaths("t1", conns, [banned()]) == []
    [violation] = check(ledger, outcome, conns, [banned()])
    assert violation.startswith("t1: 1 unknown message(s) no owner death of its own")
