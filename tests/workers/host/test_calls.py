"""The host's call threads: no call waits behind a blocked one, and idle threads are reused."""

from __future__ import annotations

import threading

from tests.support.ports import wait_for
from workers.host.calls import CallThreads


def test_a_blocked_call_does_not_hold_up_the_next() -> None:
    calls, release, second = CallThreads(), threading.Event(), threading.Event()
    calls.submit(lambda: release.wait(5) and None)
    calls.submit(second.set)
    assert second.wait(2), "the second call ran while the first was blocked"
    release.set()
    assert calls.started == 2


def test_idle_threads_take_the_next_calls() -> None:
    calls, done = CallThreads(), []
    for i in range(20):
        finished = threading.Event()
        calls.submit(lambda i=i, f=finished: (done.append(i), f.set()) and None)
        assert finished.wait(2)
        wait_for(lambda: calls._idle == 1, 2, "the thread idle again")
    assert done == list(range(20))
    assert calls.started == 1
