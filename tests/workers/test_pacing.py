"""Send pacing with a hand-moved clock: mean gap 1 / rate, jittered, off at rate 0."""

from __future__ import annotations

from shared.clock import ManualClock
from workers.session.pacing import SendPacer


def test_sends_are_spaced_by_the_jittered_gap_and_the_first_goes_at_once() -> None:
    clock, slept = ManualClock(), []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    factors = iter([0.5, 1.5, 1.0])
    pacer = SendPacer(2.0, clock, sleep=sleep, jitter=lambda lo, hi: next(factors))
    assert [pacer.wait() for _ in range(3)] == [0.0, 0.25, 0.75]
    assert slept == [0.25, 0.75]
    clock.advance(10)  # idle for a while: the next send goes at once, no catch-up burst
    pacer2_wait = SendPacer(2.0, clock, sleep=sleep, jitter=lambda lo, hi: 1.0)
    assert pacer2_wait.wait() == 0.0


def test_a_quiet_tenant_does_not_bank_sends_for_a_burst() -> None:
    clock = ManualClock()
    pacer = SendPacer(1.0, clock, sleep=clock.advance, jitter=lambda lo, hi: 1.0)
    pacer.wait()
    clock.advance(60)
    assert pacer.wait() == 0.0
    assert pacer.wait() == 1.0  # the gap after a quiet minute is a normal gap, not zero


def test_rate_zero_is_off_and_the_jitter_range_is_half_to_one_and_a_half() -> None:
    seen = []
    pacer = SendPacer(0, ManualClock(), sleep=lambda s: seen.append(s))
    assert pacer.wait() == 0.0 and seen == []
    bounds = []
    SendPacer(1.0, ManualClock(), jitter=lambda lo, hi: bounds.append((lo, hi)) or 1.0).wait()
    assert bounds == [(0.5, 1.5)]
