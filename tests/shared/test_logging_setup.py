"""Log lines: one JSON object each, with the tenant's context, and never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from api import create_app
from api.services import services_of
from shared import logging_setup
from shared.config import load_settings

ADMIN = "admin-token-must-not-leak-0123"
METRICS = "metrics-token-must-not-leak-456"
KEY = "wak_Zx8vT3_l0ngRandomKeyValue-abcdefghijklmnop"


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[callable]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logging_setup.configure_logging(
        load_settings({"admin_token": ADMIN, "metrics_token": METRICS}, environ={}),
        role="test",
    )

    def read() -> list[dict]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.strip()]

    yield read
    root.handlers, root.level = saved
    logging_setup._process.clear()


def test_one_json_object_per_line_with_context(json_lines) -> None:  # noqa: ANN001
    logging_setup.bind_process(worker="w1@host")
    log = logging.getLogger("wapair.test")
    session = {"tenant": "acme", "fence": 7, "pairing_id": "p_1"}
    logging_setup.ContextLog(log, lambda: session).info("tenant %s: connected", "acme")
    log.warning("tenant %s: self-fencing, %s", "beta", "the lease was lost")
    first, second = json_lines()
    assert first["msg"] == "tenant acme: connected" and first["level"] == "info"
    assert (first["tenant"], first["fence"], first["pairing_id"], first["worker"]) == (
        "acme", 7, "p_1", "w1@host")
    assert (second["tenant"], second["worker"], second["role"]) == ("beta", "w1@host", "test")


@pytest.mark.parametrize("leak", [
    f"admin token {ADMIN}",
    f"metrics {METRICS}",
    f"key {KEY}",
    f"headers {{'Authorization': 'Bearer {KEY}'}}",
    "Authorization: Basic b3BzOmZsb3dlci1wYXNzd29yZA==",
    "redis://:hunter2-redis-password@redis.internal:6379/0",
    "webhook secret=whsec_abcdef0123456789 sent",
    '{"password": "flower-password-123"}',
])
def test_secrets_never_reach_a_line(json_lines, leak: str) -> None:  # noqa: ANN001
    logging.getLogger("wapair.test").error("oops: %s", leak)
    try:
        raise RuntimeError(leak)
    except RuntimeError:
        logging.getLogger("wapair.test").exception("failed")
    lines = json_lines()
    text = json.dumps(lines)
    for secret in (ADMIN, METRICS, KEY, "b3BzOmZsb3dlci1wYXNzd29yZA", "hunter2-redis-password",
                   "whsec_abcdef", "flower-password-123"):
        assert secret not in text
    assert "[redacted]" in lines[0]["msg"] and "[redacted]" in lines[1]["exc"]


def test_registered_webhook_secret_is_redacted(json_lines) -> None:  # noqa: ANN001
    logging_setup.register_secret("tenant-specific-signing-secret")
    logging.getLogger("wapair.test").info("signing with tenant-specific-signing-secret")
    assert json_lines()[0]["msg"] == "signing with [redacted]"


def test_text_format_is_readable_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging_setup.configure_logging(load_settings({"log_format": "text"}, environ={}))
        logging.getLogger("wapair.test").info("tenant %s: key %s", "acme", KEY)
    finally:
        root.handlers, root.level = saved
    line = capsys.readouterr().err.strip()
    assert "INFO" in line and "tenant acme: key wak_[redacted]" in line and "tenant=acme" in line


def test_api_requests_log_route_and_status_never_credentials(
    json_lines, redis_url: str  # noqa: ANN001
) -> None:
    app = create_app({"redis_url": redis_url, "admin_token": ADMIN})
    client: FlaskClient = app.test_client()
    client.get("/api/whatsapp/status", headers={"X-Tenant-ID": "acme",
                                                "Authorization": f"Bearer {KEY}"})
    client.post("/api/admin/tenants", headers={"Authorization": f"Bearer {ADMIN}"},
                json={"id": "!bad"})
    services_of(app).close()
    lines = json_lines()
    text = json.dumps(lines)
    assert KEY not in text and ADMIN not in text
    (status,) = [x for x in lines if x.get("route") == "/api/whatsapp/status"]
    assert (status["status"], status["tenant"]) == (401, "acme")
    assert any(x.get("route") == "/api/admin/tenants" and x["status"] == 422 for x in lines)


@pytest.mark.parametrize(("line", "masked"), [
    ("connected {'jid': '6281234567890:1@s.whatsapp.net'}", "62*****7890:1@s.whatsapp.net"),
    ("device 14155550123@s.whatsapp.net", "14*****0123@s.whatsapp.net"),
    ("phone +6281234567890 asked", "+62*****7890"),
])
def test_phone_numbers_are_masked(line: str, masked: str) -> None:
    redacted = logging_setup.redact(line)
    assert masked in redacted and "81234567890" not in redacted and "4155550123" not in redacted
    assert logging_setup.redact("at 1795873234.618 fence 12") == "at 1795873234.618 fence 12"


@pytest.mark.parametrize("line", [
    "BEARER abc.def", "Basic dXNlcjpwdw==", "AUTHORIZATION: x", "Token=abc", "PassWord: hunter2",
    "APIKEY=k", "api_key: k", "wak_AbC-1", "whsec_x", "REDIS://u:pw@host:1/0",
    "+6281234567890 called", "6281234567890:3@s.whatsapp.net", "a SECRET=s in a sentence",
])
def test_the_quick_check_never_skips_a_line_a_pattern_would_change(line: str) -> None:
    from shared.logging_setup import _PATTERNS, redact

    expected = line
    for pattern, replacement in _PATTERNS:
        expected = pattern.sub(replacement, expected)
    assert expected != line and redact(line) == expected


CRASHES = """
import threading
from shared.config import load_settings
from shared.logging_setup import configure_logging
configure_logging(load_settings({"log_format": "json"}, environ={}), role="test")
worker = threading.Thread(target=lambda: 1 / 0, name="doomed")
worker.start()
worker.join()
raise RuntimeError("the main thread crashes too")
"""


def test_crash_tracebacks_are_json_lines_too() -> None:
    import subprocess
    import sys

    from tests.support.services import ROOT

    done = subprocess.run([sys.executable, "-c", CRASHES], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [line["msg"] for line in lines] == ["uncaught ZeroDivisionError in thread doomed",
                                               "uncaught RuntimeError"]
    assert all("Traceback" in line["exc"] and line["level"] == "critical" for line in lines)
