"""Two beat processes at once (celery-redbeat's lock): each task still runs once per period."""

from __future__ import annotations

import json
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
WINDOW_S = 6.0


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    proc = RedisProcess().start()
    yield proc
    proc.cleanup()


def _sent(client: redis.Redis) -> Counter[str]:
    """Tasks beat has put on the claims queue (no worker consumes it here)."""
    return Counter(json.loads(m)["headers"]["task"] for m in client.lrange(CLAIMS_QUEUE, 0, -1))


def test_two_beats_run_each_task_once_per_period(server: RedisProcess) -> None:
    env = {"REDIS_URL": server.url, "CLEANUP_INTERVAL_S": str(PERIOD_S), "LEASE_TTL_S": "3"}
    beats = [Beat(f"beat{i}", env).start() for i in (1, 2)]
    client = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: _sent(client)[CLEANUP_TASK] >= 2, 30, "beat to send tasks")
        wait_for(lambda: all("beat: Starting" in b.log() for b in beats), 10, "both beats up")
        assert all(b.alive() for b in beats)
        before = _sent(client)
        time.sleep(WINDOW_S)  # counting ticks over a real window of beat's own clock
        after = _sent(client)
        assert all(b.alive() for b in beats)
    finally:
        for beat in beats:
            beat.stop()
        client.close()
    for task in (RECONCILE_TASK, CLEANUP_TASK):
        sent = after[task] - before[task]
        print(f"\n{task}: {sent} sends in {WINDOW_S:.0f} s with two beats (period {PERIOD_S} s)")
        # beat drifts a little late each period; a second ticking beat would double it
        assert 0.6 * WINDOW_S / PERIOD_S <= sent <= WINDOW_S / PERIOD_S + 1.5, sent
