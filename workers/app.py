"""The worker process entry point: ``celery -A workers.app worker --pool threads``.

The module-level Celery app is the one Celery's command line needs; the
SessionHost is built when the worker is ready and handed over at shutdown.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import signals

from shared import metrics
from shared.config import load_settings
from shared.limits import raise_open_files_limit
from shared.logging_setup import bind_process, configure_logging
from shared.taskqueue import create_celery, worker_queue
from workers.bootstrap import build_session_host
from workers.host.pool import HostPool
from workers.session_host import SessionHost
from workers.tasks import register_tasks

log = logging.getLogger(__name__)

settings = load_settings()
celery = create_celery(settings)
# redbeat's scheduler, with its lock kept through Redis outages (workers/beat.py).
celery.conf.beat_scheduler = "workers.beat:OutageProofRedBeatScheduler"
_host: SessionHost | None = None
_pool: HostPool | None = None


def current_host() -> SessionHost | None:
    """This process's SessionHost, once the worker is ready."""
    return _host


register_tasks(celery, current_host)


def _worker_id(hostname: str | None) -> str:
    return hostname or f"wapair@{socket.gethostname()}.{os.getpid()}"


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    """Our format (LOG_FORMAT) and redaction instead of Celery's own handlers."""
    configure_logging(settings, role="celery")


@signals.celeryd_after_setup.connect
def _add_own_queue(sender: str, instance: object, **_: object) -> None:
    """Consume the worker's own queue too: kicks for the tenants it owns land there."""
    instance.app.amqp.queues.select_add(worker_queue(_worker_id(sender)))  # type: ignore[attr-defined]


@signals.worker_ready.connect
def _start_host(sender: object, **_: object) -> None:
    global _host
    raise_open_files_limit()  # one socket per live session
    worker_id = _worker_id(getattr(sender, "hostname", None))
    bind_process(worker=worker_id)
    if metrics.start_worker_exporter(settings.worker_metrics_port, settings.worker_metrics_bind):
        log.info("metrics on http://%s:%d/metrics", settings.worker_metrics_bind,
                 settings.worker_metrics_port)
    global _pool
    _host, _pool = build_session_host(celery, settings, worker_id)
    _host.start()


@signals.worker_shutdown.connect
def _stop_host(**_: object) -> None:
    global _host
    if _host is not None:
        _host.shutdown()
        _host = None
    if _pool is not None:  # after the sessions were handed over: kills the hosts
        _pool.shutdown()
