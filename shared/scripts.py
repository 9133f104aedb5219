"""The Lua scripts, loaded from ``shared/lua`` and registered once per Redis client, and the
pipelined round trips that carry them (``execute_pipelined``, ``BatchPart``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Protocol, TypeVar

import redis
from redis.client import Pipeline
from redis.commands.core import Script

_NAMES = (
    "lease_acquire",
    "lease_renew",
    "lease_release",
    "begin_pairing",
    "enqueue_command",
    "fenced_write",
    "take_command",
    "take_ahead",
    "ack_command",
    "webhook_record",
    "cleanup_tenant",
    "redis_epoch",
    "worker_heartbeat",
    "restore_tenant",
    "index_key_hash",
    "message_accept",
    "message_update",
    "message_inbound",
    "rate_limit",
)
# Shared Lua functions, prepended to the scripts that call them.
_PRELUDES = {
    "events_prelude": ("begin_pairing", "enqueue_command", "fenced_write", "cleanup_tenant",
                       "message_accept", "message_update", "message_inbound"),
    "identity_prelude": ("lease_acquire", "redis_epoch", "worker_heartbeat"),
    "epoch_prelude": ("redis_epoch", "worker_heartbeat"),
}


def _source(name: str) -> str:
    lua = resources.files("shared") / "lua"
    preludes = [(lua / f"{p}.lua").read_text() for p, users in _PRELUDES.items() if name in users]
    return "".join(preludes) + (lua / f"{name}.lua").read_text()


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
    take_ahead: Script
    ack_command: Script
    webhook_record: Script
    cleanup_tenant: Script
    redis_epoch: Script
    worker_heartbeat: Script
    restore_tenant: Script
    index_key_hash: Script
    message_accept: Script
    message_update: Script
    message_inbound: Script
    rate_limit: Script

    def __init__(self, client: redis.Redis) -> None:
        for name, source in _SOURCES.items():
            setattr(self, name, client.register_script(source))


def scripts_for(client: redis.Redis) -> Scripts:
    """Return the scripts registered on ``client``, registering them the first time."""
    found = _REGISTERED.get(client)
    if found is None:
        found = _REGISTERED[client] = Scripts(client)
    return found


def queue_script(pipe: Pipeline, script: Script, script_keys: Sequence[Any],
                 args: Sequence[Any]) -> None:
    """Add ``EVALSHA`` of ``script`` to ``pipe`` (a plain or a Cluster pipeline).

    Sent as a raw command: redis-py's ``Pipeline.evalsha`` is refused by its Cluster
    pipeline, which routes a raw ``EVALSHA`` by its first key like any other.
    """
    pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args)


T_co = TypeVar("T_co", covariant=True)


class BatchPart(Protocol[T_co]):
    """Commands that ride in another caller's round trip, with the parser of their replies.

    The caller queues them after its own commands, sends the batch and hands
    ``parse`` exactly the replies of these commands; so callers never read each
    other's raw replies (``LeaseKeeper.acquire(also=...)`` carries the new owner's
    first reads, ``SessionStore.take_over_read``, this way).
    """

    @property
    def scripts(self) -> Sequence[Script]:
        """The Lua scripts among the commands (loaded if Redis lacks them)."""

    def queue(self, pipe: Pipeline, owner_value: str) -> None:
        """Add the commands; ``owner_value`` is the lease value the batch is sent under."""

    def parse(self, replies: list[Any]) -> T_co:
        """What the replies of exactly the queued commands mean."""


class NotReplicated(redis.RedisError):
    """Raised when a write reached the primary but not ``wanted`` replicas in time: a
    failover now could lose it, so it must not be acknowledged as safe."""

    def __init__(self, wanted: int, acked: int, replies: list[Any] | None = None) -> None:
        super().__init__(f"{acked} of {wanted} replica(s) acknowledged the write in time")
        self.wanted, self.acked = wanted, acked
        self.replies = replies or []  # what the batch answered on the primary


def execute_pipelined(
    client: redis.Redis, queue: Callable[[Pipeline], None], scripts: Sequence[Script],
    *, replicas: tuple[int, int] = (0, 0),
) -> list[Any]:
    """Run what ``queue`` adds to a pipeline in one round trip and return the replies.

    ``replicas``: (count, timeout in ms): with a count, ``WAIT`` rides in the same
    round trip and ``NotReplicated`` is raised unless that many replicas acknowledged
    the batch's writes (its reply is not returned).

    Scripts go in as plain ``EVALSHA`` (``queue_script``): redis-py's Script
    in a pipeline would add a SCRIPT EXISTS round trip every time, so
    ``scripts`` are loaded only when Redis answers NOSCRIPT, and the batch is
    sent again (whatever else it holds must be safe to repeat). The first
    error reply is raised.
    """
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        if replicas[0]:
            pipe.execute_command("WAIT", replicas[0], replicas[1])
        replies = pipe.execute(raise_on_error=False)
        if attempt == 1 and any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            for script in scripts:
                client.script_load(script.script)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if replicas[0]:
            *replies, acked = replies
            if int(acked) < replicas[0]:
                raise NotReplicated(replicas[0], int(acked), list(replies))
        return list(replies)
    raise AssertionError("unreachable")
