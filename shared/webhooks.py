"""Webhooks: a tenant's URL and secret, signed deliveries, retries with backoff and jitter.

Signature scheme (docs/api.md shows how to verify it): every POST carries
``X-Wapair-Timestamp: <unix seconds>`` and
``X-Wapair-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``.
The secret is generated here, shown once when the webhook is set, and never
leaves Redis again: not in responses, task arguments or logs.

Over 300 lines: the configuration, the signing and the delivery attempt all handle
the secret, and keeping them in one module keeps that handling in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import requests

from shared import keys
from shared.clock import Clock, SystemClock
from shared.codec import text as _text
from shared.errors import DestinationRefused, InvalidInput, StoreUnavailable
from shared.events import KINDS, EventLog
from shared.outbound import OutboundPolicy
from shared.scripts import scripts_for

log = logging.getLogger(__name__)

#: Kinds delivered when a webhook names none: every state change and error, not each QR.
DEFAULT_KINDS = ("state", "pairing", "pair_code", "error")
MAX_URL = 2048
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # never all digits: no 2130706433
_PORT = ("(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
         "|[1-9][0-9]{0,3})")
#: What a webhook URL must match, in a syntax both Python and ECMA-262 (OpenAPI) read:
#: http(s), a DNS host name (no IP literal, no credentials), an optional port, then
#: printable ASCII. The address the name resolves to is checked by shared.outbound.
URL_PATTERN = f"https?://(?:{_LABEL}\\.)*{_TOP_LABEL}(?::{_PORT})?(?:[/?#][!-~]*)?"
URL = re.compile(URL_PATTERN)
#: A pending delivery untouched this long after it was due is re-sent by the sweep.
SWEEP_GRACE_S = 60.0
_DELIVERY_FIELDS = ("last_event_id", "last_attempt_at", "last_status", "last_http_status",
                    "attempts", "last_error", "delivered", "failed")

Post = Callable[..., Any]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Wapair-Signature value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def validate_url(value: object) -> str:
    """An http(s) URL matching URL_PATTERN (the OpenAPI document states it too), else
    InvalidInput; which addresses it may reach is ``shared.outbound``'s to say."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise InvalidInput(f"url must be an http(s) URL of at most {MAX_URL} characters",
                           field="url")
    if not value.startswith(("http://", "https://")):
        raise InvalidInput("url must start with http:// or https:// and name a host",
                           field="url")
    authority = re.split(r"[/?#]", value[value.index("//") + 2:], maxsplit=1)[0]
    if "@" in authority:
        raise InvalidInput("url must not carry credentials; the signature authenticates",
                           field="url")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise InvalidInput("url must not contain spaces, control or non-ASCII characters "
                           "(percent-encode them)", field="url")
    if not URL.fullmatch(value):
        raise InvalidInput("url must name its host by a DNS name (such as "
                           "https://hooks.example.com/wa), with a port from 1 to 65535 if any",
                           field="url")
    return value


def validate_kinds(value: object) -> list[str]:
    """A non-empty list of event kinds, else InvalidInput."""
    if not isinstance(value, list) or not value or not all(v in KINDS for v in value):
        raise InvalidInput(f"events must be a non-empty list of {', '.join(KINDS)}",
                           field="events")
    return sorted(set(value), key=KINDS.index)


class WebhookConfigs:
    """A tenant's webhook configuration in ``wa:{t}:webhook``; takes the Redis client.

    ``outbound`` decides which hosts a URL may name (public addresses only unless
    ``WEBHOOK_ALLOW_PRIVATE``); a URL it refuses is never stored.
    """

    def __init__(self, client: redis.Redis, clock: Clock | None = None, *,
                 outbound: OutboundPolicy | None = None) -> None:
        self._redis = client
        self._clock = clock or SystemClock()
        self.outbound = outbound or OutboundPolicy()

    def set(self, tenant: str, url: str, kinds: list[str] | None = None) -> dict[str, Any]:
        """Set (or replace) the webhook with a new secret; the reply is the only copy of it."""
        url = validate_url(url)
        chosen = validate_kinds(kinds) if kinds is not None else list(DEFAULT_KINDS)
        self.outbound.check_url(url)  # last: it may resolve the host
        secret = f"whsec_{secrets.token_urlsafe(32)}"
        now = f"{self._clock.time():.3f}"
        try:
            pipe = self._redis.pipeline()
            pipe.delete(keys.webhook(tenant))
            pipe.hset(keys.webhook(tenant), mapping={
                "url": url, "secret": secret, "kinds": ",".join(chosen), "created_at": now,
                "attempts": 0, "delivered": 0, "failed": 0,
            })
            # Tenants with a webhook are the ones the sweep looks at.
            pipe.sadd(keys.WEBHOOK_TENANTS, tenant)
            pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to store the webhook") from e
        return {"url": url, "events": chosen, "secret": secret, "created_at": float(now)}

    def get(self, tenant: str) -> dict[str, Any] | None:
        """The configuration and delivery state, without the secret; None when unset."""
        raw = self.raw(tenant)
        if not raw.get("url"):
            return None
        delivery: dict[str, Any] = {
            "last_event_id": raw.get("last_event_id") or None,
            "last_attempt_at": float(raw["last_attempt_at"]) if raw.get("last_attempt_at")
            else None,
            "last_status": raw.get("last_status") or None,
            "last_http_status": int(raw["last_http_status"]) if raw.get("last_http_status")
            else None,
            "attempts": int(raw.get("attempts") or 0),
            "last_error": raw.get("last_error") or None,
            "delivered": int(raw.get("delivered") or 0),
            "failed": int(raw.get("failed") or 0),
        }
        return {"url": raw["url"], "events": raw.get("kinds", "").split(","),
                "created_at": float(raw.get("created_at") or 0), "delivery": delivery}

    def delete(self, tenant: str) -> bool:
        """Remove the webhook; True if there was one. Queued deliveries then drop."""
        try:
            return bool(self._redis.delete(keys.webhook(tenant)))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to delete the webhook") from e

    def raw(self, tenant: str) -> dict[str, str]:
        """The stored hash as text, secret included (for the deliverer only)."""
        try:
            found = self._redis.hgetall(keys.webhook(tenant))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the webhook") from e
        return {_text(k): _text(v) for k, v in found.items()}

    def record(self, tenant: str, counter: str = "", **fields: Any) -> None:
        """Write delivery state (and bump ``counter``), only while the webhook still exists."""
        assert set(fields) <= set(_DELIVERY_FIELDS) and counter in ("", "delivered", "failed")
        state = {k: "" if v is None else str(v) for k, v in fields.items()}
        try:
            scripts_for(self._redis).webhook_record(keys=[keys.webhook(tenant)],
                                                    args=[json.dumps(state), counter])
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to record a delivery") from e


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt led to: delivered, retry (after ``delay_s``), gave_up, dropped."""

    status: str
    delay_s: float = 0.0
    http_status: int | None = None
    error: str | None = None


class WebhookDeliverer:
    """Posts one event to a tenant's webhook; the Celery task ``wapair.webhook`` wraps it.

    Attempt ``n`` (1-based) that fails is retried after
    ``backoff_s * 2**(n-1) * uniform(0.5, 1.0)`` (exponential, with jitter so many
    failing deliveries do not retry in step), until ``max_attempts`` attempts.
    Posts go through ``outbound``'s session (checked addresses, no redirects); a
    destination it refuses fails the delivery at once, with the reason in
    ``last_error``.
    """

    def __init__(self, client: redis.Redis, *, max_attempts: int, backoff_s: float,
                 timeout_s: float, post: Post | None = None, clock: Clock | None = None,
                 rng: Callable[[], float] = random.random,
                 sweep_grace_s: float = SWEEP_GRACE_S,
                 outbound: OutboundPolicy | None = None) -> None:
        self.configs = WebhookConfigs(client, clock, outbound=outbound)
        self._events = EventLog(client)
        self._redis = client
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._post = post or self.configs.outbound.session().post
        self._clock = clock or SystemClock()
        self._rng = rng
        self.sweep_grace_s = sweep_grace_s

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return self.backoff_s * 2 ** (attempt - 1) * (0.5 + 0.5 * self._rng())

    def attempt(self, tenant: str, event_id: str, attempt: int) -> Outcome:
        """Attempt ``attempt`` (1-based) at delivering ``event_id``; recorded and returned."""
        raw = self.configs.raw(tenant)
        if not raw.get("url") or not raw.get("secret"):
            return self._done(tenant, event_id, Outcome("dropped", error="no webhook configured"))
        event = self._events.get(tenant, event_id)
        if event is None:
            return self._done(tenant, event_id,
                              Outcome("dropped", error="the event was trimmed from the stream"))
        body = json.dumps({"tenant": tenant, **event.to_dict()}, separators=(",", ":")).encode()
        timestamp = str(int(self._clock.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wapair-webhook/1",
            "X-Wapair-Event-Id": event.id,
            "X-Wapair-Event-Kind": event.kind,
            "X-Wapair-Timestamp": timestamp,
            "X-Wapair-Signature": sign(raw["secret"], timestamp, body),
            "X-Wapair-Attempt": str(attempt),
        }
        http_status: int | None = None
        error: str | None = None
        refused = False
        try:
            response = self._post(raw["url"], data=body, headers=headers, timeout=self.timeout_s,
                                  allow_redirects=False)
            http_status = int(response.status_code)
            if not 200 <= http_status < 300:
                error = f"HTTP {http_status}"
        except DestinationRefused as e:
            error, refused = e.message, True  # names no address: the reason is enough
        except requests.RequestException as e:
            error = type(e).__name__  # the message may carry the URL; the kind is enough
        state: dict[str, Any] = {"last_event_id": event.id, "attempts": attempt,
                                 "last_attempt_at": f"{self._clock.time():.3f}",
                                 "last_http_status": http_status, "last_error": error}
        if error is None:
            self.configs.record(tenant, "delivered", last_status="delivered", **state)
            return self._done(tenant, event.id, Outcome("delivered", http_status=http_status))
        if attempt >= self.max_attempts or refused:
            log.warning("tenant %s: webhook for event %s given up after %d attempts (%s)",
                        tenant, event.id, attempt, error)
            self.configs.record(tenant, "failed", last_status="failed", **state)
            return self._done(tenant, event.id,
                              Outcome("gave_up", http_status=http_status, error=error))
        delay = self.delay_after(attempt)
        self.configs.record(tenant, last_status="retrying", **state)
        self._pending(tenant, event.id, self._clock.time() + delay)
        return Outcome("retry", delay, http_status, error)

    def sweep(self, send: Callable[[str, list[str]], None]) -> int:
        """Re-send deliveries overdue by ``sweep_grace_s`` (their task was lost); returns
        how many. Run by beat; a duplicate is harmless (receivers dedupe on the id)."""
        now = self._clock.time()
        sent = 0
        try:
            tenants = sorted(_text(t) for t in self._redis.smembers(keys.WEBHOOK_TENANTS))
            for tenant in tenants:
                pending = keys.webhook_pending(tenant)
                found: Any = self._redis.zrangebyscore(pending, "-inf", now - self.sweep_grace_s)
                overdue = [_text(i) for i in found]
                if not overdue:
                    if not self._redis.exists(keys.webhook(tenant)):
                        self._redis.srem(keys.WEBHOOK_TENANTS, tenant)
                    continue
                self._redis.zadd(pending, dict.fromkeys(overdue, now), xx=True)
                send(tenant, overdue)
                sent += len(overdue)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to sweep webhook deliveries") from e
        return sent

    def _pending(self, tenant: str, event_id: str, due: float) -> None:
        try:
            self._redis.zadd(keys.webhook_pending(tenant), {event_id: due}, xx=True)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to schedule a retry") from e

    def _done(self, tenant: str, event_id: str, outcome: Outcome) -> Outcome:
        try:
            self._redis.zrem(keys.webhook_pending(tenant), event_id)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to record a delivery") from e
        return outcome

    def deliver(self, tenant: str, event_id: str,
                sleep: Callable[[float], None] = time.sleep) -> Outcome:
        """Attempt until delivered, given up or dropped, sleeping between attempts."""
        attempt = 1
        while (outcome := self.attempt(tenant, event_id, attempt)).status == "retry":
            sleep(outcome.delay_s)
            attempt += 1
        return outcome
