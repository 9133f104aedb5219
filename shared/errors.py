"""The one exception tree of wapair; imports nothing from the project."""

from __future__ import annotations


class WapairError(Exception):
    """Raised when anything in wapair fails in a way it can explain."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


class ConfigError(WapairError):
    """Raised when a setting from the environment or a mapping is missing or malformed."""

    code = "config_error"


class InvalidInput(WapairError):
    """Raised when a request carries input that fails validation."""

    status = 422
    code = "invalid_input"


class DestinationRefused(InvalidInput):
    """Raised when a tenant's URL is, or resolves to, an address wapair must not connect to."""

    code = "destination_refused"


class MalformedRequest(WapairError):
    """Raised when a request body cannot be parsed at all."""

    status = 400
    code = "malformed_request"


class Unauthorized(WapairError):
    """Raised when credentials are missing or wrong."""

    status = 401
    code = "unauthorized"


class Forbidden(WapairError):
    """Raised when valid credentials do not cover the requested tenant."""

    status = 403
    code = "forbidden"


class NotFound(WapairError):
    """Raised when a tenant, QR code or other resource does not exist."""

    status = 404
    code = "not_found"


class Conflict(WapairError):
    """Raised when the tenant's state does not allow the request (already connected, exists)."""

    status = 409
    code = "conflict"


class PairingInProgress(WapairError):
    """Raised when a pairing is requested while another one for the tenant is running."""

    status = 429
    code = "pairing_in_progress"

    def __init__(self, message: str, retry_after_s: int, **context: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **context)
        self.retry_after_s = retry_after_s


class StoreUnavailable(WapairError):
    """Raised when Redis cannot be reached or answered with an error."""

    status = 503
    code = "store_unavailable"


class WhatsAppError(WapairError):
    """Raised when the WhatsApp client library fails in a way we must report upstream."""

    status = 502
    code = "upstream_error"
