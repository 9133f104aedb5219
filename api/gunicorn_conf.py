"""gunicorn settings: ``gunicorn -c python:api.gunicorn_conf api.wsgi:app``.

Prometheus multiprocess mode: each gunicorn worker writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and ``GET /metrics`` adds them up. The directory
is emptied when the master starts (stale files would add old counts) and a
dead worker's live gauges are dropped. gunicorn's own log lines use
``LOG_FORMAT`` and the same redaction as the app's; it writes no access line,
since the app's ``api.request`` line (method, route, status, duration, tenant)
is the one line per request.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from gunicorn.glogging import Logger

from shared.config import load_settings
from shared.logging_setup import gunicorn_logconfig


class NoAccessLogger(Logger):
    """gunicorn's logger without the access line: a second line per request cost ~50 µs."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


logconfig_dict = gunicorn_logconfig(load_settings())
logger_class = NoAccessLogger


def on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        # Only prometheus_client's own files, in case the variable names a shared directory.
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
