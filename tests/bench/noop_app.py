"""The baseline of the pairing benchmark: a bare Celery no-op task on the same broker.

``celery -A tests.bench.noop_app worker -Q bench.noop`` runs it, with the
delivery settings that matter as wapair's own app sets them (acks late,
prefetch 1, JSON), and a Redis result backend so the caller sees the round trip.

With ``NOOP_TRANSPORT=wapair`` the worker (and ``make_app("wapair", url)`` for
the caller) uses wapair's broker transport (``shared.kombu_redis``) on the queue
``bench.noop.wapair``: the same no-op with the one Celery-level saving wapair
makes, so the benchmark can show both baselines side by side.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from shared import kombu_redis

QUEUES = {"stock": "bench.noop", "wapair": "bench.noop.wapair"}


def make_app(transport: str, url: str) -> tuple[Celery, Any]:
    """The no-op app and task for ``transport`` ("stock" kombu or "wapair") on ``url``."""
    app = Celery(f"bench_noop_{transport}", broker=url, backend=url)
    app.conf.update(
        task_default_queue=QUEUES[transport],
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if transport == "wapair":
        app.conf.broker_transport = kombu_redis.TRANSPORT

    @app.task(name="bench.noop")
    def noop() -> int:
        """Nothing: what a round trip through the broker costs on its own."""
        return 1

    return app, noop


if "REDIS_URL" in os.environ:  # the worker: celery -A tests.bench.noop_app
    app, noop = make_app(os.environ.get("NOOP_TRANSPORT", "stock"), os.environ["REDIS_URL"])
