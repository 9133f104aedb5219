"""Tenants: strict ids, API keys stored only as hashes, domain mapping."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import redis

from shared import keys
from shared.codec import text as _text
from shared.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from shared.scripts import scripts_for

#: The one tenant-id pattern: the API, both adapters, metrics and the OpenAPI document
#: use it (ids become Redis keys, queue names and file names).
TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise InvalidInput.

    Tenant ids become Redis keys, queue names and file names, so they are
    checked once, here, strictly.
    """
    if not isinstance(value, str) or not TENANT_ID.fullmatch(value):
        raise InvalidInput(f"tenant id must match {TENANT_ID.pattern}", field="tenant")
    return value


def validate_domain(value: object) -> str:
    """Return ``value`` lower-cased if it is a plain DNS name, else raise InvalidInput."""
    if not isinstance(value, str) or not DOMAIN.fullmatch(value.lower()):
        raise InvalidInput("domain must be a DNS name such as example.com", field="domain")
    return value.lower()


def _as_float(value: str | None) -> float | None:
    return float(value) if value else None


def new_api_key() -> str:
    """A fresh tenant API key: 256 random bits, recognisable by its ``wak_`` prefix."""
    return f"wak_{secrets.token_urlsafe(32)}"


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
        api_key = new_api_key()
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
            now = f"{time.time():.3f}"
            pipe = self._redis.pipeline()
            pipe.hset(
                keys.tenant_record(tenant),
                mapping={
                    "key_hash": hash_key(api_key),
                    "domain": domain or "",
                    "created_at": now,
                    "key_updated_at": now,
                },
            )
            pipe.hset(keys.KEY_HASHES, hash_key(api_key), tenant)
            pipe.hset(keys.session(tenant), mapping={"state": "idle"})
            pipe.sadd(keys.TENANTS, tenant)
            pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to create the tenant") from e
        return api_key

    def rotate(self, tenant: str) -> str:
        """Give ``tenant`` a new API key (returned once); the old one stops working at once."""
        api_key = new_api_key()
        self._replace_key(tenant, hash_key(api_key))
        return api_key

    def revoke(self, tenant: str) -> None:
        """Remove ``tenant``'s API key: only the admin token acts for it until a rotate."""
        self._replace_key(tenant, "")

    def _replace_key(self, tenant: str, new_hash: str) -> None:
        record = keys.tenant_record(validate_tenant_id(tenant))

        def swap(pipe: redis.client.Pipeline) -> None:
            if not pipe.exists(record):
                raise NotFound(f"unknown tenant {tenant}", tenant=tenant)
            old = pipe.hget(record, "key_hash")
            pipe.multi()
            if old:
                pipe.hdel(keys.KEY_HASHES, _text(old))
            if new_hash:
                pipe.hset(keys.KEY_HASHES, new_hash, tenant)
            pipe.hset(record, mapping={"key_hash": new_hash,
                                       "key_updated_at": f"{time.time():.3f}"})

        try:
            # WATCH the record so two rotations racing leave exactly one live key.
            self._redis.transaction(swap, record)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to change the key") from e

    def index_key_hashes(self, batch: int = 500) -> int:
        """Add every tenant's live key hash missing from the key-hash index; returns how
        many were added. Idempotent, safe beside rotations (one script per tenant reads
        and indexes atomically); the API runs it at start for tenants created before the
        index existed, whose keys would otherwise get 401 where 403 is right."""
        script = scripts_for(self._redis).index_key_hash
        tenants = self.all()
        added = 0
        try:
            for start in range(0, len(tenants), batch):
                pipe = self._redis.pipeline(transaction=False)
                for tenant in tenants[start:start + batch]:
                    script(keys=[keys.tenant_record(tenant), keys.KEY_HASHES], args=[tenant],
                           client=pipe)
                added += sum(int(n) for n in pipe.execute())
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to index the key hashes") from e
        return added

    def describe(self, tenant: str) -> dict[str, Any]:
        """What an operator may see of a tenant (never the key or its hash), or NotFound."""
        found = self._describe_many([validate_tenant_id(tenant)])
        if not found:
            raise NotFound(f"unknown tenant {tenant}", tenant=tenant)
        return found[0]

    def describe_all(self) -> list[dict[str, Any]]:
        """Every tenant as ``describe`` shows it, sorted by id."""
        return self._describe_many(self.all())

    def _describe_many(self, tenants: list[str]) -> list[dict[str, Any]]:
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(keys.tenant_record(tenant))
        try:
            records = pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read tenants") from e
        described = []
        for tenant, raw in zip(tenants, records, strict=True):
            if not raw:
                continue
            record = {_text(k): _text(v) for k, v in raw.items()}
            described.append({
                "id": tenant,
                "domain": record.get("domain") or None,
                "created_at": _as_float(record.get("created_at")),
                "key_updated_at": _as_float(record.get("key_updated_at")),
                "has_key": bool(record.get("key_hash")),
            })
        return described

    def tenant_for_key(self, api_key: str) -> str | None:
        """The tenant a live key belongs to, if any.

        A lookup by the key's SHA-256, so its timing tells nothing about the key.
        """
        try:
            found = self._redis.hget(keys.KEY_HASHES, hash_key(api_key))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to check the key") from e
        return _text(found) if found else None

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
    def key_hash_command(tenant: str) -> tuple[str, ...]:
        """The read of the tenant's key hash (its reply is None for an unknown tenant)."""
        return ("HGET", keys.tenant_record(tenant), "key_hash")

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
