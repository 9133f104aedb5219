"""The operations settings (logs, metrics): defaults and errors that name the variable."""

from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ConfigError


def test_defaults_keep_metrics_private_and_logs_json() -> None:
    s = load_settings(environ={})
    assert (s.log_format, s.log_level, s.metrics_token) == ("json", "INFO", None)
    assert (s.worker_metrics_port, s.worker_metrics_bind) == (0, "127.0.0.1")
    s = load_settings(environ={"WORKER_METRICS_PORT": "9808", "WORKER_METRICS_BIND": "::",
                               "LOG_FORMAT": "text"})
    assert (s.worker_metrics_port, s.worker_metrics_bind, s.log_format) == (9808, "::", "text")


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "verbose"), ("METRICS_TOKEN", "short"),
     ("WORKER_METRICS_PORT", "70000"), ("WORKER_METRICS_PORT", "-1"),
     ("WORKER_METRICS_PORT", "ninety"), ("WORKER_METRICS_BIND", "bad host!")],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value})
