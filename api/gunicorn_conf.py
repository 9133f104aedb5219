"""gunicorn settings: ``gunicorn -c python:api.gunicorn_conf api.wsgi:app``.

Prometheus multiprocess mode: each gunicorn worker writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and ``GET /metrics`` adds them up. The directory
is emptied when the master starts (stale files would add old counts) and a
dead worker's live gauges are dropped. gunicorn's own log lines use
``LOG_FORMAT`` and the same redaction as the app's; it writes no access line,
since the app's ``api.request`` line (method, route, status, duration, tenant)
is the one line per request.

gunicorn answers some requests itself, before Flask sees them (a header over
``limit_request_field_size``: 431; a request line over ``limit_request_line``:
414; a malformed request: 400), with an HTML page. Those answers are JSON here
too, in the app's ``{"error": {"code", "message"}}`` shape.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger

from shared.config import load_settings
from shared.logging_setup import gunicorn_logconfig


class NoAccessLogger(Logger):
    """gunicorn's logger without the access line: a second line per request cost ~50 µs."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


logconfig_dict = gunicorn_logconfig(load_settings())
logger_class = NoAccessLogger


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answer (``gunicorn.util.write_error``), as JSON."""
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "bad_request"
    # gunicorn's detail may quote the request; bounded, and JSON-escaped by dumps.
    message = f"{reason}: {mesg[:200]}" if mesg else reason
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# The workers (forked from the master that reads this file) call util.write_error.
util.write_error = write_json_error


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
