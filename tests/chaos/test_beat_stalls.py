"""Chaos case: two beats while Redis stalls (SIGSTOP) across their ticks.

Both beats must live through it and go on ticking afterwards, each task still
sent once per period (one beat holds redbeat's lock; the other waits for it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from shared.taskqueue import CLAIMS_QUEUE, CLEANUP_TASK, RECONCILE_TASK
from tests.support.ports import wait_for
from tests.support.redis_proc import RedisProcess
from tests.support.services import Beat

pytestmark = pytest.mark.slow
PERIOD_S = 1.0
STALLS_S = (5.0, 3.0)  # each spans several ticks and the 1.5 s socket timeout
WINDOW_S = 5.0


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    proc = RedisProcess().start()
    yield proc
    if proc.proc is not None:
        os.kill(proc.proc.pid, signal.SIGCONT)
    proc.cleanup()


def _sent(client: redis.Redis) -> Counter[str]:
    """Tasks beat has put on the claims queue (no worker consumes it here)."""
    return Counter(json.loads(m)["headers"]["task"] for m in client.lrange(CLAIMS_QUEUE, 0, -1))


def _stall(server: RedisProcess, seconds: float) -> None:
    """Freeze the redis-server this test started: connections hang, nothing is refused."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the stall is the fault: it must last across real ticks
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def test_two_beats_ride_out_redis_stalls_and_keep_one_send_per_period(
        server: RedisProcess) -> None:
    env = {"REDIS_URL": server.url, "CLEANUP_INTERVAL_S": str(PERIOD_S), "LEASE_TTL_S": "3"}
    beats = [Beat(f"beat-stall{i}", env).start() for i in (1, 2)]
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        wait_for(lambda: _sent(client)[CLEANUP_TASK] >= 2, 30, "beat to send tasks")
        wait_for(lambda: all("beat: Starting" in b.log() for b in beats), 10, "both beats up")
        for seconds in STALLS_S:
            _stall(server, seconds)
            before = _sent(client)[CLEANUP_TASK]
            wait_for(lambda b=before: _sent(client)[CLEANUP_TASK] > b, 10,
                     "beat to send again after the stall")
            assert all(b.alive() for b in beats), [b.log()[-3000:] for b in beats]
        before = _sent(client)
        time.sleep(WINDOW_S)  # counting ticks over a real window of beat's own clock
        after = _sent(client)
        assert all(b.alive() for b in beats), [b.log()[-3000:] for b in beats]
    finally:
        for beat in beats:
            beat.stop()
        client.close()
    for task in (RECONCILE_TASK, CLEANUP_TASK):
        sent = after[task] - before[task]
        print(f"\n{task}: {sent} sends in {WINDOW_S:.0f} s after {len(STALLS_S)} Redis stalls "
              f"(two beats, period {PERIOD_S} s)")
        # beat drifts a little late each period; a second ticking beat would double it
        assert 0.6 * WINDOW_S / PERIOD_S <= sent <= WINDOW_S / PERIOD_S + 1.5, sent


def test_a_beat_started_before_its_redis_waits_for_it_and_then_ticks() -> None:
    """A beat that starts during an outage (or a failover not yet promoted) must not exit."""
    server = RedisProcess()  # its port is chosen; nothing listens there yet
    env = {"REDIS_URL": server.url, "CLEANUP_INTERVAL_S": str(PERIOD_S), "LEASE_TTL_S": "3"}
    beat = Beat("beat-early", env).start()
    try:
        wait_for(lambda: "Redis unreachable" in beat.log(), 30, "beat to find Redis away")
        assert beat.alive(), beat.log()[-3000:]
        server.start()
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        wait_for(lambda: _sent(client)[CLEANUP_TASK] >= 2, 30, "beat to send tasks")
        assert beat.alive(), beat.log()[-3000:]
        client.close()
    finally:
        beat.stop()
        server.cleanup()
