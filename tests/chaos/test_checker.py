"""The chaos checker's own arithmetic, on hand-made connection logs (no cluster)."""

from __future__ import annotations

from typing import Any

from tests.chaos.checker import Report, measure_recoveries
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
