"""One settings object for the API, the workers, beat and the CLI.

Defaults, then the environment, then a mapping passed in (tests); every value
is validated here so a bad one stops start-up with a message naming it.

Over 300 lines: every setting's default, environment name and check is one table
read by every process; split up, a setting could be validated in one place and not another.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlparse

from shared.errors import ConfigError

BACKENDS = ("neonize", "sandbox")
WEBHOOK_LONGEST_WAIT_S = 500.0
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


@dataclass(frozen=True)
class Settings:
    """Validated configuration; field names are the environment names in lower case."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinel (issue 16): with both set, every client asks these Sentinels for the
    # primary of REDIS_SENTINEL_MASTER; REDIS_URL then gives only the database,
    # password and TLS (its host and port are not used).
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    # Writes Redis may lose in a crash or failover, in seconds (AOF everysec: the
    # last second; a replica's lag). A worker takes and renews leases only with a
    # heartbeat this much older (shared/lease.py, the restart freeze).
    redis_loss_window_s: float = 1.0
    # Replicas that must acknowledge a write the API answers as accepted (a pairing,
    # a command, a message) within the loss window; None: 1 with Sentinel, else 0.
    redis_ack_replicas: int | None = None
    wa_backend: str = "neonize"
    wa_sandbox_url: str = "http://127.0.0.1:8070"
    wa_store: str = "./var/store"
    wa_proxy: str | None = None
    pairing_timeout_s: float = 120.0
    lease_ttl_s: float = 15.0
    # --- connection hosts (workers/host/): see docs/architecture.md ---
    wa_sessions_per_host: int = 500
    wa_host_close_timeout_s: float = 2.0
    wa_host_max_store_opens: int = 20
    wa_device_name: str = "wapair"
    claim_interval_s: float = 1.0
    cleanup_interval_s: float = 10.0
    admin_token: str | None = None
    max_body_bytes: int = 16_384
    # live events and webhooks (issue 4)
    events_maxlen: int = 1000
    events_stream_max_s: float = 300.0
    events_heartbeat_s: float = 15.0
    events_max_streams: int = 10_000
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0
    webhook_timeout_s: float = 5.0
    # Local receivers (127.0.0.1, private ranges) for development and tests only.
    webhook_allow_private: bool = False
    # --- operations (logs, metrics): see docs/operations.md ---
    log_format: str = "json"
    log_level: str = "INFO"
    metrics_token: str | None = None
    worker_metrics_port: int = 0
    worker_metrics_bind: str = "127.0.0.1"
    # --- API rate limits and proxies (issue 4) ---
    rate_limit_tenant: str = "6/minute;60/hour"
    rate_limit_address: str = "60/minute;600/hour"
    trusted_proxy_hops: int = 0
    # --- messages (issue 15): see docs/api.md "Messages" ---
    # Messages per second a tenant sends at most, on average (each gap is jittered
    # from 0.5x to 1.5x); 0 turns pacing off. Bursts from a fresh linked device are
    # what gets accounts banned, so the default is one message every 2 s.
    send_rate_per_tenant: float = 0.5
    outbox_max: int = 100  # accepted messages not yet finished, per tenant (429 beyond)
    message_max_body_bytes: int = 7_500_000  # POST /messages body (base64 media inside)
    message_max_media_bytes: int = 5_000_000  # decoded media, given or fetched from a url
    message_ttl_s: float = 7 * 86400.0  # how long message records are kept

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.redis_sentinels)

    @property
    def store_is_postgres(self) -> bool:
        return self.wa_store.startswith(("postgres://", "postgresql://"))


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(schemes)}://")
        return raw

    return parse


def _positive(kind: type) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return raw

    return parse


def _store(name: str, raw: str) -> str:
    if raw.startswith(("postgres://", "postgresql://")):
        return _url(("postgres", "postgresql"))(name, raw)
    if not raw.strip():
        raise ConfigError(f"{name} must be a directory or a postgres:// URL")
    return raw


def _token(name: str, raw: str) -> str | None:
    if raw == "":
        return None
    if len(raw) < 16:
        raise ConfigError(f"{name} must be at least 16 characters long")
    return raw


def _device_name(name: str, raw: str) -> str:
    if not raw or len(raw) > 50 or not raw.isprintable():
        raise ConfigError(f"{name} must be 1 to 50 printable characters, got {raw!r}")
    return raw


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} must be host:port pairs separated by commas, got {item!r}")
        _bind_address(name, host)
        found.append((host, int(port)))
    return tuple(found)


def _optional_name(name: str, raw: str) -> str | None:
    if raw == "":
        return None
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", raw):
        raise ConfigError(f"{name} must be 1 to 64 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _seconds_up_to_60(name: str, raw: str) -> float:
    value = _non_negative_float(name, raw)
    if value > 60:
        raise ConfigError(f"{name} must be between 0 and 60, got {raw!r}")
    return value


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number (0 = off), got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, got {raw!r}")
    return value


def _bind_address(name: str, raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME.fullmatch(raw):
            raise ConfigError(
                f"{name} must be an IP address or host name such as 127.0.0.1, got {raw!r}"
            ) from None
    return raw


def _optional_url(name: str, raw: str) -> str | None:
    return _url(("http", "https", "socks5"))(name, raw) if raw else None


def _rate_limits(name: str, raw: str) -> str:
    from limits import parse_many

    try:
        if not parse_many(raw):
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be limits such as '6/minute;60/hour', got {raw!r}"
        ) from None
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _optional_non_negative_int(name: str, raw: str) -> int | None:
    return _non_negative_int(name, raw) if raw.strip() else None


def _non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {raw!r}")
    return value


def _non_negative_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be 0 or more, got {raw!r}")
    return value


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "redis_url": _url(("redis", "rediss", "unix")),
    "redis_sentinels": _sentinels,
    "redis_sentinel_master": _optional_name,
    "redis_loss_window_s": _seconds_up_to_60,
    "redis_ack_replicas": _optional_non_negative_int,
    "wa_backend": _choice(BACKENDS),
    "wa_sandbox_url": _url(("http",)),
    "wa_store": _store,
    "wa_proxy": _optional_url,
    "pairing_timeout_s": _positive(float),
    "lease_ttl_s": _positive(float),
    "wa_sessions_per_host": _positive(int),
    "wa_host_close_timeout_s": _positive(float),
    "wa_host_max_store_opens": _positive(int),
    "wa_device_name": _device_name,
    "claim_interval_s": _positive(float),
    "cleanup_interval_s": _positive(float),
    "admin_token": _token,
    "max_body_bytes": _positive(int),
    # live events and webhooks (issue 4)
    "events_maxlen": _positive(int),
    "events_stream_max_s": _positive(float),
    "events_heartbeat_s": _positive(float),
    "events_max_streams": _positive(int),
    "webhook_max_attempts": _positive(int),
    "webhook_backoff_s": _positive(float),
    "webhook_timeout_s": _positive(float),
    "webhook_allow_private": _flag,
    "log_format": _choice(LOG_FORMATS),
    "log_level": _choice(LOG_LEVELS),
    "metrics_token": _token,
    "worker_metrics_port": _port,
    "worker_metrics_bind": _bind_address,
    "rate_limit_tenant": _rate_limits,
    "rate_limit_address": _rate_limits,
    "trusted_proxy_hops": _non_negative_int,
    "send_rate_per_tenant": _non_negative_float,
    "outbox_max": _positive(int),
    "message_max_body_bytes": _positive(int),
    "message_max_media_bytes": _positive(int),
    "message_ttl_s": _positive(float),
}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, then ``environ`` (os.environ), then ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env_name = f.name.upper()
        if env_name in environ:
            values[f.name] = _PARSERS[f.name](env_name, environ[env_name].strip())
    for key, raw in (overrides or {}).items():
        name = key.lower()
        if name not in _PARSERS:
            raise ConfigError(f"unknown setting {key!r}")
        values[name] = None if raw is None else _PARSERS[name](name.upper(), str(raw))
    settings = Settings(**values)
    if bool(settings.redis_sentinels) != bool(settings.redis_sentinel_master):
        raise ConfigError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER must be set together")
    if settings.redis_sentinels and settings.redis_url.startswith("unix"):
        raise ConfigError("REDIS_URL must be redis:// or rediss:// when REDIS_SENTINELS is set")
    if settings.lease_ttl_s < 1:
        raise ConfigError("LEASE_TTL_S must be at least 1 second")
    # A webhook retry waits in the broker as a countdown task; one that outlasts
    # the Redis transport's visibility timeout (600 s) would be delivered twice.
    longest = settings.webhook_backoff_s * 2 ** (settings.webhook_max_attempts - 2)
    if settings.webhook_max_attempts > 1 and longest > WEBHOOK_LONGEST_WAIT_S:
        raise ConfigError(
            f"WEBHOOK_BACKOFF_S * 2**(WEBHOOK_MAX_ATTEMPTS - 2) must be at most "
            f"{WEBHOOK_LONGEST_WAIT_S:.0f} s, got {longest:.0f} s"
        )
    return settings
