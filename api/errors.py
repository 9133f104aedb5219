"""The one place errors become HTTP responses: JSON, right status, no internals."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from shared.errors import StoreUnavailable, WapairError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """``{"error": {"code", "message"}}`` with ``status``."""
    return jsonify({"error": {"code": code, "message": message}}), status


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(WapairError)
    def _wapair(error: WapairError) -> tuple[Response, int]:
        response, status = error_response(error.status, error.code, error.message)
        retry_after = getattr(error, "retry_after_s", None)  # 429s: pairing, outbox
        if isinstance(retry_after, int):
            response.headers["Retry-After"] = str(retry_after)
        if isinstance(error, StoreUnavailable):
            response.headers["Retry-After"] = "5"
            log.warning("store unavailable: %s (%s)", error.message, error.__cause__)
        return response, status

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _store_down(error: Exception) -> tuple[Response, int]:
        # A safety net: Redis and broker errors are converted where we call them,
        # but one that slips through is still an outage (503), never a 500.
        return _wapair(StoreUnavailable("the store is unreachable; retry shortly"))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        response, status = error_response(error.code or 500, code, error.description or code)
        # The exception's own headers (405's Allow, RFC 9110 15.5.6), not its HTML type.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        log.error("unhandled %s on request", type(error).__name__, exc_info=error)
        return error_response(500, "internal_error", "internal error; it has been logged")
