"""Send pacing with a hand-moved clock: mean gap 1 / rate, jittered, off at rate 0."""

from __future__ import annotations

from shared.clock import ManualClock
from workers.session.pacing import SendPacer


def test_sends_are_spaced_by_the_jittered_gap_and_the_first_goes_at_once() -> None:
    clock = ManualClock()
    factors = iter([0.5, 1.5, 1.0])
    pacer = SendPacer(2.0, clock, jitter=lambda lo, hi: next(factors))
    assert pacer.due_in() == 0.0
    pacer.sent()
    assert pacer.due_in() == 0.25  # 0.5 x the mean gap of 0.5 s
    clock.advance(0.25)
    assert pacer.due_in() == 0.0
    pacer.sent()
    assert pacer.due_in() == 0.75
    clock.advance(0.5)
    assert pacer.due_in() == 0.25  # not due yet: nothing is consumed by asking


def test_a_quiet_tenant_does_not_bank_sends_for_a_burst() -> None:
    clock = ManualClock()
    pacer = SendPacer(1.0, clock, jitter=lambda lo, hi: 1.0)
    pacer.sent()
    clock.advance(60)
    assert pacer.due_in() == 0.0
    pacer.sent()
    assert pacer.due_in() == 1.0  # the gap after a quiet minute is a normal gap, not zero


def test_rate_zero_is_off_and_the_jitter_range_is_half_to_one_and_a_half() -> None:
    pacer = SendPacer(0, ManualClock())
    pacer.sent()
    assert pacer.due_in() == 0.0
    bounds = []
    SendPacer(1.0, ManualClock(), jitter=lambda lo, hi: bounds.append((lo, hi)) or 1.0).sent()
    assert bounds == [(0.5, 1.5)]
