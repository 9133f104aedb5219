"""The module-level app gunicorn and ``flask --app`` need: ``gunicorn api.wsgi:app``."""

from __future__ import annotations

from api import create_app
from shared.config import load_settings
from shared.logging_setup import configure_logging

configure_logging(load_settings(), role="api")
app = create_app()
