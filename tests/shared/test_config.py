"""Settings: defaults, environment, overrides, and errors that name the variable."""

from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ConfigError


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.wa_backend, s.pairing_timeout_s, s.lease_ttl_s) == ("neonize", 120.0, 15.0)
    assert s.admin_token is None and not s.store_is_postgres


def test_environment_then_overrides() -> None:
    env = {"WA_BACKEND": "sandbox", "LEASE_TTL_S": "5", "WA_STORE": "postgres://u@h/db"}
    s = load_settings({"lease_ttl_s": 3}, environ=env)
    assert s.wa_backend == "sandbox" and s.lease_ttl_s == 3.0 and s.store_is_postgres


@pytest.mark.parametrize(
    ("name", "value"),
    [("WA_BACKEND", "whatsapp-web"), ("PAIRING_TIMEOUT_S", "soon"), ("LEASE_TTL_S", "-1"),
     ("REDIS_URL", "http://x"), ("ADMIN_TOKEN", "short"), ("WA_SANDBOX_URL", "ftp://x"),
     ("LEASE_TTL_S", "0.5"), ("RATE_LIMIT_TENANT", "lots"), ("RATE_LIMIT_ADDRESS", ""),
     ("RATE_LIMIT_TENANT", "5 per fortnight"), ("TRUSTED_PROXY_HOPS", "-1"),
     ("TRUSTED_PROXY_HOPS", "one")],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value})


def test_unknown_override() -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_settings({"nope": 1}, environ={})


def test_webhook_backoff_must_fit_within_the_broker_visibility_timeout() -> None:
    assert load_settings({"webhook_max_attempts": 8, "webhook_backoff_s": 2}, environ={})
    with pytest.raises(ConfigError, match="WEBHOOK_BACKOFF_S"):
        load_settings({"webhook_max_attempts": 12, "webhook_backoff_s": 2}, environ={})


def test_rate_limit_and_proxy_settings() -> None:
    s = load_settings(environ={})
    assert (s.rate_limit_tenant, s.trusted_proxy_hops) == ("6/minute;60/hour", 0)
    s = load_settings(environ={"RATE_LIMIT_ADDRESS": "100/minute", "TRUSTED_PROXY_HOPS": "2"})
    assert (s.rate_limit_address, s.trusted_proxy_hops) == ("100/minute", 2)


def test_webhook_allow_private_is_off_unless_turned_on() -> None:
    assert load_settings(environ={}).webhook_allow_private is False
    assert load_settings(environ={"WEBHOOK_ALLOW_PRIVATE": "1"}).webhook_allow_private is True
    assert load_settings({"webhook_allow_private": "false"}, environ={}).webhook_allow_private \
        is False
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOW_PRIVATE"):
        load_settings(environ={"WEBHOOK_ALLOW_PRIVATE": "maybe"})
