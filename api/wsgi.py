"""The module-level app gunicorn and ``flask --app`` need: ``gunicorn api.wsgi:app``."""

from __future__ import annotations

import gc

from api import create_app
from shared.config import load_settings
from shared.limits import raise_open_files_limit
from shared.logging_setup import configure_logging

configure_logging(load_settings(), role="api")
raise_open_files_limit()  # each event stream holds an open socket
app = create_app()
# Everything loaded so far (Flask, Celery, kombu, redis-py: ~10^5 objects) lives
# as long as the process; frozen, it is left out of every garbage collection,
# so a full collection no longer pauses requests for tens of milliseconds.
gc.freeze()
