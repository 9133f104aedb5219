"""Messages in Redis: accepting outbound ones, moving them on, recording inbound ones.

A message's record (``keys.message``) holds its text and status; its media bytes sit
beside it (``keys.message_media``). Only ids travel elsewhere: the send command in the
tenant's mailbox names the message, Celery tasks name the tenant. Every change is a
Lua script that emits its event (``message_status``, ``message``) in the same step.

Outbound sends are at most once: the owner records ``sending`` (fenced) before it
hands a message to the client, and a new owner that finds one ``sending`` records
``unknown`` rather than send it again (``workers.session.messaging``).

Over 300 lines: accepting, the owner's moves and the inbound record share the
record's layout, its keys and the event emission; split, each half would need
the other's decoding and key lists.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.clock import Clock, SystemClock
from shared.codec import decode_hash as _decode
from shared.errors import Conflict, NotFound, StoreUnavailable, WapairError
from shared.events import WebhookDispatch, hand_off_webhooks
from shared.scripts import NotReplicated, execute_pipelined, queue_script, scripts_for
from shared.state import NOT_REPLICATED, Command

#: Every status a message can have; the finished ones never change but by a receipt.
STATUSES = ("queued", "sending", "sent", "delivered", "read", "failed", "unknown")
FINISHED = ("sent", "delivered", "read", "failed", "unknown")
#: The record fields GET /messages/{id} shows, in order.
PUBLIC_FIELDS = ("id", "to", "status", "wa_message_id", "created_at", "sent_at",
                 "delivered_at", "read_at", "error")
INDEX_MAX = 1000


class NotConnected(Conflict):
    """Raised when a message is sent for a tenant that is neither connected nor reconnecting."""

    code = "not_connected"


class OutboxFull(WapairError):
    """Raised when the tenant's queue of unsent messages is at its cap."""

    status = 429
    code = "outbox_full"

    def __init__(self, message: str, retry_after_s: int, **context: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **context)
        self.retry_after_s = retry_after_s


class SendingNotReplicated(StoreUnavailable):
    """Raised when the owner's move to ``sending`` reached the primary but no replica in
    time (``REDIS_ACK_REPLICAS``): the owner must not hand the message over, since a
    promotion now could bring back ``queued`` and have it sent a second time."""


class IdempotencyConflict(Conflict):
    """Raised when an Idempotency-Key comes again with another body."""

    code = "idempotency_conflict"


@dataclass(frozen=True)
class AcceptedMessage:
    """An outbound message in the tenant's mailbox (or the one an Idempotency-Key named)."""

    id: str
    owner: str  # the lease holder's worker id ('' when none)
    created: bool


def body_hash(body: dict[str, Any]) -> str:
    """The hash an Idempotency-Key's body is compared by (canonical JSON)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def _number(value: str | None) -> float | None:
    return float(value) if value else None


class MessageStore:
    """Reads and transitions of a tenant's messages; takes the Redis client and a clock."""

    def __init__(self, client: redis.Redis, clock: Clock | None = None, *,
                 events_maxlen: int = 1000, ttl_s: float = 7 * 86400.0,
                 on_webhook_events: WebhookDispatch | None = None,
                 replicas: tuple[int, int] = (0, 0)) -> None:
        """``replicas``: as ``SessionStore``'s, for ``accept`` and for the owner's move
        to ``sending`` (a promotion that lost it would let the next owner send the
        message again)."""
        self.replicas = replicas
        self._redis = client
        self._scripts = scripts_for(client)
        self._clock = clock or SystemClock()
        self.events_maxlen = events_maxlen
        self.ttl_ms = int(ttl_s * 1000)
        self.on_webhook_events = on_webhook_events

    # --- the API side ---------------------------------------------------------
    def accept(self, tenant: str, record: dict[str, str], *, media: bytes = b"",
               idempotency_key: str = "", body: dict[str, Any] | None = None,
               outbox_max: int = 100, send_rate: float = 0.0) -> AcceptedMessage:
        """Record an outbound message and queue its send, or raise why not (nothing changes)."""
        now = self._clock.time()
        message_id = f"m_{uuid.uuid4().hex[:20]}"
        # Command's own JSON: the owner acks it by value (ack_command.lua's LREM).
        command = Command(f"c_{uuid.uuid4().hex[:16]}", "send", tenant, now,
                          message_id=message_id)
        fields = {**record, "id": message_id, "direction": "out", "status": "queued",
                  "created_at": f"{now:.3f}"}
        key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()
        hashed = body_hash(body or {}) if idempotency_key else ""
        if hashed:
            fields["body_hash"] = hashed
        script_keys = [keys.session(tenant), keys.message(tenant, message_id),
                       keys.idempotency(tenant, key_hash), keys.outbox(tenant),
                       keys.messages_index(tenant, "out"), keys.mailbox(tenant),
                       keys.lease(tenant), keys.message_media(tenant, message_id),
                       keys.events(tenant), keys.webhook(tenant), keys.webhook_pending(tenant)]
        args: list[Any] = [message_id, json.dumps(fields), hashed, self.ttl_ms, outbox_max,
                           command.to_json(),
                           f"{now:.3f}", media, INDEX_MAX, self.events_maxlen]

        def queue(pipe: Any) -> None:
            queue_script(pipe, self._scripts.message_accept, script_keys, args)
            pipe.sadd(keys.ACTIVE, tenant)

        try:
            reply = execute_pipelined(self._redis, queue, [self._scripts.message_accept],
                                      replicas=self.replicas)[0]
        except NotReplicated as e:
            raise StoreUnavailable(NOT_REPLICATED) from e
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e
        status, detail = reply[0].decode(), reply[1].decode()
        if status == "same":
            return AcceptedMessage(detail, "", created=False)
        if status == "other_body":
            raise IdempotencyConflict(
                "this Idempotency-Key was used with another body", tenant=tenant)
        if status == "not_connected":
            raise NotConnected(f"tenant is {detail}; messages need a connected tenant",
                               tenant=tenant)
        if status == "full":
            per_s = send_rate if send_rate > 0 else 10.0
            retry = max(1, int(-(-(int(detail) - outbox_max + 1) // per_s)))
            raise OutboxFull(f"{detail} messages wait to be sent; try again later", retry,
                             tenant=tenant)
        self._dispatch(tenant, reply[2:])
        # The lease's value is "worker_id|token": the kick goes to the worker's queue.
        return AcceptedMessage(message_id, detail.split("|", 1)[0], created=True)

    def get(self, tenant: str, message_id: str) -> dict[str, Any]:
        """The message as GET /messages/{id} shows it, or NotFound."""
        raw = self.read(tenant, message_id)
        if not raw:
            raise NotFound("no such message", tenant=tenant)
        return public(raw)

    def read(self, tenant: str, message_id: str) -> dict[str, str]:
        """The raw record ({} when there is none)."""
        try:
            return _decode(self._redis.hgetall(keys.message(tenant, message_id)))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the message") from e

    def recent(self, tenant: str, direction: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` messages of ``direction`` (out|in), newest first."""
        try:
            ids: list[bytes] = list(self._redis.zrevrange(  # type: ignore[arg-type]
                keys.messages_index(tenant, direction), 0, limit - 1))
            pipe = self._redis.pipeline(transaction=False)
            for raw_id in ids:
                pipe.hgetall(keys.message(tenant, raw_id.decode()))
            records = pipe.execute() if ids else []
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to list messages") from e
        return [public(_decode(r)) for r in records if r]  # ids: bytes (no decode_responses)

    def media(self, tenant: str, message_id: str) -> tuple[dict[str, str], bytes]:
        """A message's record and media bytes, or NotFound."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(keys.message(tenant, message_id))
            pipe.get(keys.message_media(tenant, message_id))
            raw, data = pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the media") from e
        if not raw or data is None:
            raise NotFound("no media for this message", tenant=tenant)
        return _decode(raw), bytes(data)

    # --- the owner side -------------------------------------------------------
    def move(self, tenant: str, fence: int, message_id: str, status: str,
             from_statuses: tuple[str, ...], **fields: str) -> tuple[int, str]:
        """Move a message to ``status`` if it is in one of ``from_statuses`` and ``fence``
        is the newest grant: (1, '') applied, (0, '') refused (stale fence),
        (2, status now) not in a status the move starts from, (3, '') no such message."""
        move = {"status": status, "from": list(from_statuses), "fields": fields}
        reply = self._update(tenant, fence, message_id, move, wait=status == "sending")
        result = int(reply[0])
        if result == 1:
            self._dispatch(tenant, reply[1:])
            return 1, ""
        return result, reply[1].decode() if len(reply) > 1 else ""

    def begin_send(self, tenant: str, fence: int, message_id: str,
                   **fields: str) -> tuple[int, dict[str, str]]:
        """Record a queued text message ``sending`` and read it, in one step: (1, the
        record as it was) applied; (2, the record) not queued or not text, nothing
        changed; (0, {}) refused (stale fence); (3, {}) no such message."""
        move = {"status": "sending", "from": ["queued"], "fields": fields, "kinds": ["text"],
                "record": True}
        reply = self._update(tenant, fence, message_id, move, wait=True)
        result = int(reply[0])
        if result == 1:
            self._dispatch(tenant, reply[2:])
            return 1, _decode_flat(reply[1])
        if result == 2:
            return 2, _decode_flat(reply[2])
        return result, {}

    def _update(self, tenant: str, fence: int, message_id: str,
                move: dict[str, Any], *, wait: bool = False) -> list[Any]:
        """message_update.lua; ``wait``: a move to ``sending``, which must reach
        ``replicas`` before the client gets the message (``SendingNotReplicated``)."""
        script_keys = [keys.fence(tenant), keys.message(tenant, message_id),
                       keys.outbox(tenant), keys.wa_message_ids(tenant), keys.events(tenant),
                       keys.webhook(tenant), keys.webhook_pending(tenant)]
        args: list[Any] = [fence, message_id, json.dumps(move), self.events_maxlen,
                f"{self._clock.time():.3f}"]
        try:
            if not (wait and self.replicas[0]):
                return list(self._scripts.message_update(keys=script_keys, args=args))
            script = self._scripts.message_update
            return list(execute_pipelined(
                self._redis, lambda pipe: queue_script(pipe, script, script_keys, args),
                [script], replicas=self.replicas)[0])
        except NotReplicated as e:
            reply = list(e.replies[0]) if e.replies else []
            if reply and int(reply[0]) == 1:
                raise SendingNotReplicated(
                    "'sending' reached the Redis primary but no replica in time; the "
                    "message is not handed over") from e
            return reply  # nothing of ours was written: as without the wait
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e

    def id_for(self, tenant: str, wa_message_id: str) -> str | None:
        """Our id of the sent message WhatsApp calls ``wa_message_id``."""
        try:
            found = self._redis.hget(keys.wa_message_ids(tenant), wa_message_id)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e
        return found.decode() if isinstance(found, bytes) else found

    def record_inbound(self, tenant: str, fence: int, message_id: str,
                       record: dict[str, str], event: dict[str, Any],
                       media: bytes = b"") -> int:
        """Record an inbound message and emit its event once: 1 recorded, 0 refused
        (stale fence), 2 recorded before."""
        script_keys = [keys.fence(tenant), keys.message(tenant, message_id),
                       keys.messages_index(tenant, "in"), keys.message_media(tenant, message_id),
                       keys.events(tenant), keys.webhook(tenant), keys.webhook_pending(tenant)]
        now = self._clock.time()
        try:
            reply = self._scripts.message_inbound(keys=script_keys, args=[
                fence, message_id, json.dumps(record), json.dumps(event), media, self.ttl_ms,
                INDEX_MAX, self.events_maxlen, f"{now:.3f}"])
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e
        if int(reply[0]) == 1:
            self._dispatch(tenant, reply[1:])
        return int(reply[0])

    def _dispatch(self, tenant: str, event_ids: list[Any]) -> None:
        hand_off_webhooks(self._redis, self.on_webhook_events, tenant, event_ids)


def _decode_flat(flat: list[bytes]) -> dict[str, str]:
    """A hash as a script returns it (HGETALL's flat list), decoded."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def public(raw: dict[str, str]) -> dict[str, Any]:
    """A record as the API shows it (no text: the caller sent or received it)."""
    out: dict[str, Any] = {
        "id": raw.get("id"),
        "direction": raw.get("direction", "out"),
        "to": raw.get("to") or None,
        "status": raw.get("status"),
        "wa_message_id": raw.get("wa_message_id") or None,
        "created_at": _number(raw.get("created_at")),
        "sent_at": _number(raw.get("sent_at")),
        "delivered_at": _number(raw.get("delivered_at")),
        "read_at": _number(raw.get("read_at")),
        "error": json.loads(raw["error"]) if raw.get("error") else None,
        "kind": raw.get("kind", "text"),
    }
    if raw.get("direction") == "in":
        out.update({"from": raw.get("from"), "chat": raw.get("chat"),
                    "text": raw.get("text") or None})
        if raw.get("mime_type"):
            out["media"] = {"mime_type": raw.get("mime_type"), "size": int(raw.get("size") or 0),
                            "filename": raw.get("filename") or None}
            if raw.get("media_omitted"):  # not downloaded: too_large or download_failed
                out["media"]["omitted"] = raw["media_omitted"]
    return out
