"""The Lua scripts, loaded from ``shared/lua`` and registered once per Redis client."""

from __future__ import annotations

import weakref
from importlib import resources

import redis
from redis.commands.core import Script

_NAMES = (
    "lease_acquire",
    "lease_renew",
    "lease_release",
    "begin_pairing",
    "enqueue_command",
    "fenced_write",
    "take_command",
    "ack_command",
    "webhook_record",
    "cleanup_tenant",
    "redis_epoch",
    "restore_tenant",
)
# Scripts that append tenant events get the shared ``emit`` function prepended.
_WITH_EVENTS = ("begin_pairing", "enqueue_command", "fenced_write", "cleanup_tenant")


def _source(name: str) -> str:
    lua = resources.files("shared") / "lua"
    body = (lua / f"{name}.lua").read_text()
    return (lua / "events_prelude.lua").read_text() + body if name in _WITH_EVENTS else body


_SOURCES = {n: _source(n) for n in _NAMES}
_REGISTERED: weakref.WeakKeyDictionary[redis.Redis, Scripts] = weakref.WeakKeyDictionary()


class Scripts:
    """The registered scripts of one client, as attributes named after their files."""

    lease_acquire: Script
    lease_renew: Script
    lease_release: Script
    begin_pairing: Script
    enqueue_command: Script
    fenced_write: Script
    take_command: Script
    ack_command: Script
    webhook_record: Script
    cleanup_tenant: Script
    redis_epoch: Script
    restore_tenant: Script

    def __init__(self, client: redis.Redis) -> None:
        for name, source in _SOURCES.items():
            setattr(self, name, client.register_script(source))


def scripts_for(client: redis.Redis) -> Scripts:
    """Return the scripts registered on ``client``, registering them the first time."""
    found = _REGISTERED.get(client)
    if found is None:
        found = _REGISTERED[client] = Scripts(client)
    return found
