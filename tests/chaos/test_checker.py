"""The chaos checker's own arithmetic, on hand-made connection logs (no cluster)."""

from __future__ import annotations

from typing import Any

from tests.chaos.checker import BAN_RESUME_S, Report, check_bans, measure_recoveries
from tests.chaos.driver import Ledger
from tests.chaos.faults import Fault

TTL_S = 4.0


def conn(cid: int, mode: str, client: str, started: float, ended: float | None,
         reason: str | None) -> dict[str, Any]:
    return {"id": cid, "tenant": "t1", "mode": mode, "device": "d1", "account": "a1",
            "started_at": started, "ended_at": ended, "client": client, "end_reason": reason}


def recoveries(conns: list[dict[str, Any]], faults: list[Fault]) -> dict[str, list[float]]:
    report = Report()
    measure_recoveries(conns, faults, Ledger(), TTL_S, report)
    assert not report.violations
    return {kind: [round(g, 2) for g in gaps] for kind, gaps in report.recoveries.items()}


def test_a_pause_is_measured_from_when_it_began() -> None:
    pause = Fault("sigstop", 100.0, 106.0, ["A"])
    conns = [conn(1, "resume", "A", 90.0, 104.5, "stream_replaced"),
             conn(2, "resume", "B", 104.1, None, None)]
    assert recoveries(conns, [pause]) == {"sigstop": [4.1]}


def test_a_connection_opened_after_a_pause_is_not_counted_as_interrupted_by_it() -> None:
    """The resumed worker pairs anew, then a rolling restart hands the tenant over
    within the TTL after SIGCONT: a handover of 0.01 s, not a 9.61 s pause recovery."""
    pause = Fault("sigstop", 100.0, 106.0, ["A"])
    rolling = Fault("sigterm_rolling", 109.6, 112.0, ["A", "B", "C"])
    conns = [conn(1, "resume", "A", 108.0, 109.6, "client_closed"),
             conn(2, "resume", "B", 109.61, None, None)]
    assert recoveries(conns, [pause, rolling]) == {"sigterm_rolling": [0.01]}


def test_an_overlap_is_a_violation_even_while_the_old_owner_is_paused() -> None:
    """A paused worker's hosts drop its connections before the lease could go elsewhere,
    so the server replacing a paused owner's connection is no longer an excuse."""
    from tests.chaos.checker import check_connections

    pause = Fault("sigstop", 100.0, 106.0, ["A"])
    conns = [conn(1, "resume", "A", 90.0, 104.5, "stream_replaced"),
             conn(2, "resume", "B", 104.1, None, None)]
    report = Report()
    check_connections(conns, [], [pause], TTL_S, report)
    assert report.overlaps == {"during_pause": 1}
    assert len(report.violations) == 1 and "owner paused" in report.violations[0]

    report = Report()
    check_connections([conn(1, "resume", "A", 90.0, 104.0, "client_closed"),
                       conn(2, "resume", "B", 104.1, None, None)], [], [pause], TTL_S, report)
    assert report.violations == [] and report.overlaps == {}


# -- temporary_ban: t1's device d1 banned at 100.0 until 103.0 --------------------------

def ban(started: float = 100.0, until: float = 103.0) -> Fault:
    return Fault("temporary_ban", started, started + 0.2, tenant="t1", jid="d1", until=until)


def refused(cid: int, client: str, at: float) -> dict[str, Any]:
    return conn(cid, "resume", client, at, at, "temporary_ban")


def ban_violations(conns: list[dict[str, Any]], faults: list[Fault],
                   ledger: Ledger | None = None) -> list[str]:
    report = Report()
    measure_recoveries(conns, faults, ledger or Ledger(), TTL_S, report)
    check_bans(conns, faults, ledger or Ledger(), TTL_S, report)
    return report.violations


def test_a_ban_is_measured_from_its_expiry_not_charged_its_length() -> None:
    conns = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban"),
             conn(2, "resume", "A", 103.4, None, None)]
    assert recoveries(conns, [ban()]) == {"temporary_ban": [0.4]}
    assert ban_violations(conns, [ban()]) == []


def test_a_ban_that_a_rolling_restart_overlaps_is_not_a_slow_handover() -> None:
    """The new owner's take-over meets the ban (refused), then waits it out: neither
    the refusal nor the wait is a 3 s handover, and the refusal is not the owner's."""
    rolling = Fault("sigterm_rolling", 100.5, 102.0, ["A", "B", "C"])
    conns = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban"),
             refused(2, "B", 101.0),
             conn(3, "resume", "B", 103.3, None, None)]
    report = Report()
    measure_recoveries(conns, [ban(), rolling], Ledger(), TTL_S, report)
    check_bans(conns, [ban(), rolling], Ledger(), TTL_S, report)
    assert report.violations == []
    assert {k: [round(g, 2) for g in v] for k, v in report.recoveries.items()} == {
        "temporary_ban": [0.3]}


def test_a_resume_tried_while_the_ban_lasts_fails_unless_the_driver_asked_for_it() -> None:
    conns = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban"), refused(2, "A", 101.5),
             conn(3, "resume", "A", 103.4, None, None)]
    [violation] = ban_violations(conns, [ban()])
    assert violation.startswith("t1 tried a resume (connection 2, temporary_ban) while")
    ledger = Ledger(commands=[("t1", "resume", 101.4)])
    assert ban_violations(conns, [ban()], ledger) == []
    # A Redis restart over before the ban excuses nothing (the short profile's order).
    restart = Fault("redis_restart", 96.0, 97.5)
    assert len(ban_violations(conns, [restart, ban()])) == 1
    # A take-over by another process meets the ban once: not the owner's retry.
    conns[1]["client"] = "B"
    assert ban_violations(conns, [ban()]) == []


def test_a_connection_admitted_during_the_ban_fails() -> None:
    conns = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban"),
             conn(2, "resume", "A", 101.5, None, None)]
    assert any("admitted while its device was banned" in v
               for v in ban_violations(conns, [ban()]))


def test_a_late_resume_after_the_ban_fails() -> None:
    conns = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban"),
             conn(2, "resume", "A", 103.0 + BAN_RESUME_S + 0.5, None, None)]
    [violation] = ban_violations(conns, [ban()])
    assert violation == "t1 connected again 3.50 s after its ban's expiry"


def test_a_ban_never_resumed_or_that_ended_nothing_fails() -> None:
    never = [conn(1, "resume", "A", 90.0, 100.01, "temporary_ban")]
    assert ban_violations(never, [ban()]) == ["t1 never connected again after its ban"]
    missed = [conn(1, "resume", "A", 90.0, 99.0, "client_closed"),
              conn(2, "resume", "A", 103.3, None, None)]
    assert ban_violations(missed, [ban()]) == ["the ban of t1 ended no connection of d1"]
    reset = Ledger(commands=[("t1", "reset", 99.8)])
    assert ban_violations(missed, [ban()], reset) == []
