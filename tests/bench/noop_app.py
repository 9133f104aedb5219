"""The baseline of the pairing benchmark: a bare Celery no-op task on the same broker.

``celery -A tests.bench.noop_app worker -Q bench.noop`` runs it, with the
delivery settings that matter as wapair's own app sets them (acks late,
prefetch 1, JSON), and a Redis result backend so the caller sees the round trip.
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "bench.noop"

app = Celery("bench_noop", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> int:
    """Nothing: what a round trip through the broker costs on its own."""
    return 1
