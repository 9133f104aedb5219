"""The rules that kill a connection host, on hand-made views (no processes)."""

from __future__ import annotations

from dataclasses import replace

from workers.host.health import IDLE_STORE_HOST_S, HostView, judge

FRESH = HostView(now=100.0, sessions=10, overdue_closes=0, last_heard=99.5,
                 stats={"fds": 60, "threads": 20, "sessions": 10}, baseline={"fds": 8,
                 "threads": 3}, opens=10, empty_since=None, retiring=False)


def reason(view: HostView, max_store_opens: int = 0) -> str | None:
    verdict = judge(view, close_timeout_s=2.0, max_store_opens=max_store_opens)
    return verdict.reason if verdict else None


def test_a_healthy_host_stays() -> None:
    assert reason(FRESH) is None


def test_an_unconfirmed_close_or_silence_kills_it() -> None:
    assert reason(replace(FRESH, overdue_closes=1)) == "close_timeout"
    assert reason(replace(FRESH, last_heard=94.0)) == "silent"


def test_descriptors_or_threads_past_their_bound_recycle_it() -> None:
    assert reason(replace(FRESH, stats={**FRESH.stats, "fds": 64 + 4 * 10 + 1})) == "recycled"
    assert reason(replace(FRESH, stats={**FRESH.stats, "threads": 64 + 4 * 10 + 1})) == \
        "recycled"
    assert reason(replace(FRESH, stats={**FRESH.stats, "fds": 64 + 4 * 10})) is None


def test_an_empty_host_above_its_baseline_is_replaced() -> None:
    empty = replace(FRESH, sessions=0, stats={"fds": 8 + 17, "threads": 3, "sessions": 0})
    assert reason(empty) == "recycled"
    assert reason(replace(empty, stats={"fds": 8 + 16, "threads": 3, "sessions": 0})) is None
    # The host still reports a session the worker no longer counts: not yet.
    assert reason(replace(empty, stats={**empty.stats, "sessions": 1})) is None


def test_with_a_store_budget_an_empty_host_that_opened_sessions_goes() -> None:
    empty = replace(FRESH, sessions=0, stats={"fds": 9, "threads": 3, "sessions": 0},
                    empty_since=100.0 - IDLE_STORE_HOST_S + 1)
    assert reason(empty, max_store_opens=20) is None
    assert reason(replace(empty, retiring=True), max_store_opens=20) == "recycled"
    assert reason(replace(empty, empty_since=90.0), max_store_opens=20) == "recycled"
    assert reason(replace(empty, empty_since=90.0)) is None  # no budget: SQLite, sandbox
