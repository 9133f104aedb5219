"""Reading a tenant's event stream (``wa:{t}:events``): history, resumable tails, one event.

The Lua scripts that change a tenant's state are the only writers (see
``shared/lua/events_prelude.lua``); this module reads them, and hands the ids of
the ones a webhook wants to the dispatcher (``hand_off_webhooks``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.codec import text as _text
from shared.errors import InvalidInput, StoreUnavailable

log = logging.getLogger(__name__)

#: Kinds an event can have, in the order a pairing usually produces them.
KINDS = ("pairing", "state", "qr", "pair_code", "error", "message", "message_status")
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


@dataclass(frozen=True)
class Event:
    """One entry of a tenant's stream."""

    id: str
    kind: str
    data: dict[str, Any]
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": self.at, "data": self.data}


def validate_event_id(value: str) -> str:
    """A stream id such as ``1764140000000-0`` (what Last-Event-ID carries), else InvalidInput."""
    if not _STREAM_ID.fullmatch(value):
        raise InvalidInput("an event id looks like 1764140000000-0", field="Last-Event-ID")
    return value


def event_from_entry(entry_id: Any, fields: Any) -> Event:
    """An entry of ``wa:{t}:events`` as XREAD/XRANGE return it (bytes or text)."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    try:
        data = json.loads(decoded.get("data") or "{}")
    except ValueError:
        data = {}
    return Event(_text(entry_id), decoded.get("kind", ""), data if isinstance(data, dict) else {},
                 float(decoded.get("at") or 0))


class EventLog:
    """Reads tenant events; takes the Redis client it works on."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def history(self, tenant: str, limit: int) -> list[Event]:
        """The last ``limit`` events, oldest first."""
        try:
            entries: Any = self._redis.xrevrange(keys.events(tenant), count=limit)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the events") from e
        return [event_from_entry(i, f) for i, f in reversed(entries)]

    def latest_id(self, tenant: str) -> str:
        """The id of the newest event, or ``0-0`` when there is none."""
        found = self.history(tenant, 1)
        return found[0].id if found else "0-0"

    def after(self, tenant: str, last_id: str, block_ms: int, count: int = 100) -> list[Event]:
        """Events newer than ``last_id``, waiting up to ``block_ms`` for the first one."""
        try:
            reply: Any = self._redis.xread({keys.events(tenant): last_id}, count=count,
                                           block=block_ms)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the events") from e
        return [event_from_entry(i, f) for _, entries in reply or [] for i, f in entries]

    def get(self, tenant: str, event_id: str) -> Event | None:
        """One event by id, or None once it has been trimmed away."""
        try:
            entries: Any = self._redis.xrange(keys.events(tenant), event_id, event_id, count=1)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the event") from e
        return event_from_entry(*entries[0]) if entries else None


#: Called with (tenant, event ids) for events the tenant's webhook wants delivered.
WebhookDispatch = Callable[[str, list[str]], None]


def hand_off_webhooks(client: redis.Redis, dispatch: WebhookDispatch | None, tenant: str,
                      event_ids: Sequence[Any]) -> None:
    """Hand the ids of events the tenant's webhook wants to ``dispatch``, if any.

    The script that wrote them already listed them in ``wa:{t}:webhook-pending``; the
    tenant is indexed for the sweep first, so a hand-off that fails here is re-sent by
    the sweep, and the change that caused the events stands either way.
    """
    if not event_ids:
        return
    ids = [_text(i) if isinstance(i, bytes | str) else str(i) for i in event_ids]
    try:
        client.sadd(keys.WEBHOOK_TENANTS, tenant)
        if dispatch is not None:
            dispatch(tenant, ids)
    except Exception:  # the change is made; the sweep delivers what this missed
        log.warning("tenant %s: webhook deliveries %s not queued now; the sweep will",
                    tenant, ids, exc_info=True)
