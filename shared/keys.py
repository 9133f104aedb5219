"""Every Redis key wapair uses, with its type and meaning.

Per-tenant keys carry the tenant in a hash tag (``wa:{t1}:...``) so that a
Redis Cluster keeps one tenant's keys in one slot and the Lua scripts that
touch several of them stay legal there. Tenant ids are validated before they
reach this module (see ``shared.tenants.validate_tenant_id``).
"""

from __future__ import annotations

# --- global keys -----------------------------------------------------------
# set: every tenant id that exists.
TENANTS = "wa:tenants"
# hash: domain name -> tenant id (Host header mapping; never authenticates).
DOMAINS = "wa:domains"
# set: tenants that may need an owner (pairing, connected, mail waiting);
# a hint the claim scan walks, cleaned up by owners that find nothing to do.
ACTIVE = "wa:active"
# The epoch keys below share the hash tag "{_}" (never a tenant id, which starts
# with [a-z0-9]), so the scripts that read them together (redis_epoch.lua,
# worker_heartbeat.lua) are legal on a Redis Cluster. No per-tenant script reads
# them: a grant proves the epoch by the identity of its own node instead
# (docs/reliability.md, "The restart freeze on a Cluster").
# string: written once when leases are first granted; its absence means Redis
# lost its data (restart without persistence, FLUSHALL), see shared.lease. Its
# value (the run_id of the Redis that found it missing and the time) is new
# after each loss, which tells workers to re-seed their tenants (workers/recovery.py).
BOOT_MARKER = "wa:{_}:boot"
# string with PX: the longest grant freeze in force (the delayed-restart rule);
# a node seen for the first time while it exists is frozen at least as long.
LEASE_GRACE = "wa:{_}:lease-grace"
# zset: worker id -> unix time (the worker's wall clock) of its last heartbeat;
# also what bounds the grant freeze after a restart (epoch_prelude.lua).
WORKERS = "wa:{_}:workers"
# zset: worker id -> unix time it began a warm shutdown (kept LEAVING_KEPT_S): a
# worker passing a kick on skips these, whose queues nobody may consume soon.
LEAVING = "wa:{_}:leaving"
LEAVING_KEPT_S = 60.0
# hash: node identity ('run_id:master_replid2' of a Redis primary that grants
# leases) -> unix ms (on this Redis' clock) from which that node may grant. A
# restart (new run_id) or a promotion (new replid) is a new identity, frozen
# from when it is first seen (shared/lua/epoch_prelude.lua).
NODES = "wa:{_}:nodes"
# set: tenants that may have webhook deliveries pending (a hint the sweep walks).
WEBHOOK_TENANTS = "wa:webhook-tenants"

# --- API keys and rate limits (issue 4) ---------------------------------------
# hash: sha256 hex of a live tenant API key -> tenant id. Lets the API tell a
# key of another tenant (403) from no key at all (401); rotate and revoke keep
# it in step with the key_hash of wa:{t}:tenant; tenants created before it
# existed are added at API start (TenantRegistry.index_key_hashes).
KEY_HASHES = "wa:key-hashes"
# prefix of the rate limits' moving windows (api/ratelimit.py, rate_limit.lua): one
# sorted set of hit times per limit, "wa:ratelimit:<endpoint>:tenant:<t>:<n>/<s>s"
# (or "unauthenticated:<ip>"), "wa:ratelimit:commands:addr:<ip>:<n>/<s>s" for the
# per-address limits the three endpoints share; each expires with its window.
RATE_LIMIT_PREFIX = "wa:ratelimit"


def _tenant(tenant: str, name: str) -> str:
    return f"wa:{{{tenant}}}:{name}"


def tenant_record(tenant: str) -> str:
    """hash: id, key_hash (sha256 hex of the API key; empty once revoked), domain,
    created_at, key_updated_at."""
    return _tenant(tenant, "tenant")


def session(tenant: str) -> str:
    """hash: state, device (JID), owner (worker id), fence, pairing_id, updated_at,
    last_error (JSON or empty)."""
    return _tenant(tenant, "session")


def pairing(tenant: str) -> str:
    """hash: id, method, status, started_at, deadline_at, ended_at (unix seconds)."""
    return _tenant(tenant, "pairing")


def qr(tenant: str) -> str:
    """string with PX: JSON {code, index, expires_at} of the QR code shown now."""
    return _tenant(tenant, "qr")


def lease(tenant: str) -> str:
    """string with PX: 'worker_id|token' of the worker that owns the tenant's session."""
    return _tenant(tenant, "lease")


def fence(tenant: str) -> str:
    """integer: incremented on every lease grant; state writes carry the value they got."""
    return _tenant(tenant, "fence")


def mailbox(tenant: str) -> str:
    """list: JSON commands (pair, reset, logout, resume) waiting for the owner, oldest first."""
    return _tenant(tenant, "mailbox")


def inflight(tenant: str) -> str:
    """list (0 or 1 item): the command the owner is running; re-run by the next owner."""
    return _tenant(tenant, "inflight")


# --- live events, phone codes and webhooks (issue 4) ------------------------
def events(tenant: str) -> str:
    """stream, trimmed with MAXLEN ~ EVENTS_MAXLEN: the tenant's events, oldest first.

    Entry fields: kind (state, pairing, qr, pair_code, error), data (JSON),
    at (unix seconds). Written only by the Lua scripts that make the change the
    event describes, so a refused write adds no event and an applied one always does.
    """
    return _tenant(tenant, "events")


def pair_code(tenant: str) -> str:
    """string with PX: JSON {code, expires_at} of the phone pairing code shown now."""
    return _tenant(tenant, "pair-code")


def webhook(tenant: str) -> str:
    """hash: url, secret, kinds (comma-separated event kinds), created_at, and the
    delivery state: last_event_id, last_attempt_at, last_status, last_http_status,
    attempts, last_error, delivered, failed."""
    return _tenant(tenant, "webhook")


def webhook_pending(tenant: str) -> str:
    """zset: event id -> unix time by which its delivery should have moved on; the
    Lua script that writes an event adds it, the deliverer removes it when done
    (delivered, given up, dropped), and the sweep re-sends what is overdue."""
    return _tenant(tenant, "webhook-pending")


# --- messages (issue 15) -------------------------------------------------------
def message(tenant: str, message_id: str) -> str:
    """hash: one message, sent or received: id, direction (out|in), to, chat, from, kind
    (text|image|document), text, caption, mime_type, filename, media_url, size, retry
    (at_most_once|at_least_once), body_hash, status, wa_message_id, created_at,
    sending_at, sent_at, delivered_at, read_at, error (JSON or empty). Expires after
    MESSAGE_TTL_S. Its text is never logged and never travels in a Celery task."""
    return _tenant(tenant, f"msg:{message_id}")


def message_media(tenant: str, message_id: str) -> str:
    """string: a message's media bytes (outbound: what the API was given; inbound: what
    the contact sent); expires with the message."""
    return _tenant(tenant, f"media:{message_id}")


def messages_index(tenant: str, direction: str) -> str:
    """zset: message id -> created_at of the tenant's recent messages of ``direction``
    (out|in), trimmed to MESSAGE_INDEX_MAX; ``GET /api/whatsapp/messages`` reads it."""
    return _tenant(tenant, f"msgs:{direction}")


def outbox(tenant: str) -> str:
    """zset: message id -> created_at of accepted messages not yet finished (queued or
    sending); its size is what OUTBOX_MAX caps (429 outbox_full)."""
    return _tenant(tenant, "outbox")


def idempotency(tenant: str, key_hash: str) -> str:
    """string with PX: 'message_id|body_hash' for an Idempotency-Key (sha256 hex of it)."""
    return _tenant(tenant, f"idem:{key_hash}")


def wa_message_ids(tenant: str) -> str:
    """hash: WhatsApp's message id -> our message id, for the receipts of sent messages."""
    return _tenant(tenant, "wamid")

