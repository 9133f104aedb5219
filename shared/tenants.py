"""Tenants: strict ids, API keys stored only as hashes, domain mapping."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import redis
from redis.client import Pipeline

from shared import keys
from shared.errors import Conflict, InvalidInput, NotFound, StoreUnavailable

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise InvalidInput.

    Tenant ids become Redis keys, queue names and file names, so they are
    checked once, here, strictly.
    """
    if not isinstance(value, str) or not TENANT_ID.fullmatch(value):
        raise InvalidInput(
            "tenant id must match [a-z0-9][a-z0-9_-]{0,62}", field="tenant"
        )
    return value


def validate_domain(value: object) -> str:
    """Return ``value`` lower-cased if it is a plain DNS name, else raise InvalidInput."""
    if not isinstance(value, str) or not DOMAIN.fullmatch(value.lower()):
        raise InvalidInput("domain must be a DNS name such as example.com", field="domain")
    return value.lower()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def hash_key(api_key: str) -> str:
    """The stored form of an API key (keys are long random strings, so a plain hash serves)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class TenantRegistry:
    """Creates tenants and checks their keys; takes the Redis client it works on."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def create(self, tenant: str, domain: str | None = None) -> str:
        """Create ``tenant`` and return its API key; the key is not kept anywhere."""
        tenant = validate_tenant_id(tenant)
        domain = validate_domain(domain) if domain else None
        api_key = f"wak_{secrets.token_urlsafe(32)}"
        try:
            if domain and not self._redis.hsetnx(keys.DOMAINS, domain, tenant):
                owner = self._redis.hget(keys.DOMAINS, domain)
                if owner is None or _text(owner) != tenant:
                    raise Conflict(f"domain {domain} already belongs to another tenant")
            created = self._redis.hsetnx(keys.tenant_record(tenant), "id", tenant)
            if not created:
                if domain and self._redis.hget(keys.DOMAINS, domain) == tenant.encode():
                    self._redis.hdel(keys.DOMAINS, domain)
                raise Conflict(f"tenant {tenant} already exists", tenant=tenant)
            pipe = self._redis.pipeline()
            pipe.hset(
                keys.tenant_record(tenant),
                mapping={
                    "key_hash": hash_key(api_key),
                    "domain": domain or "",
                    "created_at": f"{time.time():.3f}",
                },
            )
            pipe.hset(keys.session(tenant), mapping={"state": "idle"})
            pipe.sadd(keys.TENANTS, tenant)
            pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to create the tenant") from e
        return api_key

    def exists(self, tenant: str) -> bool:
        """True if the tenant has been created."""
        try:
            return bool(self._redis.exists(keys.tenant_record(tenant)))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to look the tenant up") from e

    def key_matches(self, tenant: str, api_key: str) -> bool:
        """Compare ``api_key`` with the tenant's stored hash in constant time."""
        try:
            stored = self._redis.hget(keys.tenant_record(tenant), "key_hash")
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to check the key") from e
        return self.stored_key_matches(stored, api_key)

    @staticmethod
    def queue_key_hash(pipe: Pipeline, tenant: str) -> None:
        """Queue the read of the tenant's key hash (None for an unknown tenant) on ``pipe``."""
        pipe.hget(keys.tenant_record(tenant), "key_hash")

    @staticmethod
    def stored_key_matches(stored: bytes | str | None, api_key: str) -> bool:
        """Compare ``api_key`` with a stored hash (None: no such tenant) in constant time."""
        expected = _text(stored) if stored else "0" * 64
        return hmac.compare_digest(expected, hash_key(api_key)) and stored is not None

    def tenant_for_domain(self, host: str) -> str | None:
        """The tenant mapped to ``host`` (port stripped), if any."""
        name = host.rsplit(":", 1)[0].strip().lower() if host else ""
        if not name:
            return None
        try:
            found = self._redis.hget(keys.DOMAINS, name)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to map the host") from e
        return _text(found) if found else None

    def require(self, tenant: str) -> str:
        """Return ``tenant`` if it exists, else raise NotFound."""
        if not self.exists(tenant):
            raise NotFound(f"unknown tenant {tenant}", tenant=tenant)
        return tenant

    def all(self) -> list[str]:
        """Every tenant id, sorted."""
        try:
            return sorted(_text(m) for m in self._redis.smembers(keys.TENANTS))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to list tenants") from e
