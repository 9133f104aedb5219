"""Logging for every wapair process: one JSON line per event (or readable text), never a secret.

``configure_logging(settings, role)`` is called once per process (``api/wsgi.py``,
the Celery ``setup_logging`` signal in ``workers/app.py``); gunicorn's own
loggers get the same formatter from :func:`gunicorn_logconfig`. Each line
carries the context fields that apply: ``tenant``, ``pairing_id``, ``worker``,
``fence`` (and ``command``, ``route``, ``status``, ``duration_ms`` where set). They come from

- ``extra=`` on the call, or a :class:`ContextLog` adapter bound to an object
  (a ``TenantSession`` binds its tenant, pairing id and fence);
- process-wide values (:func:`bind_process`: the worker id);
- the house convention that a line about a tenant starts ``"tenant %s: ..."``
  with the tenant id as its first argument.

Every line passes :func:`redact` last: API keys (``wak_...``), webhook secrets
(``whsec_...``), bearer and basic credentials, ``Authorization`` headers,
passwords in URLs, ``secret=``/``token=``/``password=`` values, and every value
registered with :func:`register_secret` (the admin and metrics tokens) become
``[redacted]``; phone numbers are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from types import TracebackType
from typing import Any

from shared.config import Settings

CONTEXT_FIELDS = ("tenant", "pairing_id", "worker", "fence", "command", "route", "status",
                  "duration_ms")
REDACTED = "[redacted]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"wak_[A-Za-z0-9_\-]+"), "wak_" + REDACTED),
    (re.compile(r"whsec_[A-Za-z0-9_\-]+"), "whsec_" + REDACTED),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\n,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@\s]+@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"(?i)((?:secret|password|passwd|token|api_key|apikey)['\"]?\s*[:=]\s*['\"]?)"
                r"[^\s'\",}&]+"), r"\1" + REDACTED),
    # Phone numbers are personal data: a device JID (6281234567890:3@s.whatsapp.net)
    # and an E.164 number keep their first two and last four digits only.
    (re.compile(r"\b(\d{2})\d{3,11}(\d{4})((?:\.\d+)?(?::\d+)?@s\.whatsapp\.net)"),
     r"\1*****\2\3"),
    (re.compile(r"\+(\d{2})\d{3,11}(\d{4})\b"), r"+\1*****\2"),
)
# Every pattern above needs one of these substrings to match (lower-cased), or a
# "+" before a digit; a line without any (most lines: "GET /api/whatsapp/status
# 200 1.2ms") skips the patterns, which cost ~15 µs a line.
_TRIGGERS = ("wak_", "whsec_", "authorization", "bearer", "basic", "://", "secret", "passw",
             "token", "api_key", "apikey", "@s.whatsapp.net")
_PLUS_DIGIT = re.compile(r"\+\d")
_secrets_lock = threading.Lock()
#: Registered secrets, longest first (a tuple swapped whole, so redact() needs no lock).
_secrets: tuple[str, ...] = ()
_process: dict[str, Any] = {}


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in a log line (tokens from the settings, webhook secrets)."""
    global _secrets
    if value and len(value) >= 8:
        with _secrets_lock:
            if value not in _secrets:
                _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def _may_match(text: str) -> bool:
    # A plain loop: 0.5 us a line, against 1.5 for any() over a generator and 5 for one
    # case-insensitive alternation regex.
    lowered = text.lower()
    for trigger in _TRIGGERS:
        if trigger in lowered:
            return True
    return "+" in text and _PLUS_DIGIT.search(text) is not None


def redact(text: str) -> str:
    """``text`` with every known secret and credential-looking value replaced."""
    for value in _secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    if not _may_match(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def bind_process(**fields: Any) -> None:
    """Context every line of this process carries (``worker=`` the worker id)."""
    _process.update({k: v for k, v in fields.items() if v is not None})


def _context(record: logging.LogRecord) -> dict[str, Any]:
    found = dict(_process)
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value not in (None, ""):
            found[name] = value
    if "tenant" not in found and isinstance(record.msg, str) and record.msg.startswith(
        "tenant %s"
    ) and isinstance(record.args, tuple) and record.args:
        found["tenant"] = str(record.args[0])
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, exc."""

    def __init__(self, role: str = "") -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if self.role:
            line["role"] = self.role
        for key, value in _context(record).items():
            line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for ``make run``, with the same context and the same redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return redact(f"{text} [{context}]" if context else text)


class ContextLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines carry the context ``fields()`` returns at the time of the call."""

    def __init__(self, logger: logging.Logger, fields: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__(logger, {})
        self._fields = fields

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**self._fields(), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (servers and tests swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def formatter_for(settings: Settings, role: str = "") -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` asks for."""
    return JsonFormatter(role) if settings.log_format == "json" else TextFormatter()


def configure_logging(settings: Settings, role: str = "") -> None:
    """Send every log line of this process to stderr in ``LOG_FORMAT``; idempotent."""
    register_secret(settings.admin_token)
    register_secret(settings.metrics_token)
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.setFormatter(formatter_for(settings, role))
    handler.set_name("wapair")
    # Replace every root handler: a library's own (neonize calls basicConfig at import)
    # would print the same line again, unformatted and unredacted.
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    # Neither format shows the caller, thread or process: skip collecting them on
    # every record (the logging HOWTO's "Optimization"; the caller is a stack walk).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # A crash's traceback goes through the same formatter, not as plain text beside it.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("wapair.crash").critical("uncaught %s", kind.__name__,
                                               exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("wapair.crash").critical(
        "uncaught %s in thread %s", args.exc_type.__name__, name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """A ``logconfig_dict`` for gunicorn so its own lines share the format and the redaction."""
    formatter = (
        {"()": "shared.logging_setup.JsonFormatter", "role": "api"}
        if settings.log_format == "json"
        else {"()": "shared.logging_setup.TextFormatter"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "wapair",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"wapair": formatter},
        # Named "wapair" so configure_logging() in the app replaces it, not doubles it.
        "handlers": {"wapair": handler, "gunicorn": handler},
        "root": {"level": settings.log_level, "handlers": ["wapair"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["gunicorn"],
                               "propagate": False, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["gunicorn"],
                                "propagate": False, "qualname": "gunicorn.access"},
        },
    }
