"""The tenant session state machine in Redis: transitions, fenced writes, reads.

The states, pairing statuses and the moves between them are listed in
``shared/state_machine.py``; this module runs them. The API's
transitions and the owner's writes are Lua scripts, so two API replicas racing
get one winner and a writer that lost its lease changes nothing.

Over 300 lines: every read and write of a tenant's session keys goes through
``SessionStore``, one Redis contract with its scripts; splitting it by method would
split that contract (issue 14 lists a ``Batch`` type as the way to thin it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

from shared import keys
from shared.clock import Clock, SystemClock
from shared.codec import decode_hash as _decode
from shared.codec import lease_owner as _owner
from shared.errors import Conflict, NotFound, PairingInProgress, StoreUnavailable
from shared.events import WebhookDispatch, hand_off_webhooks
from shared.owner_writes import OwnerWrite
from shared.phone import mask_phone
from shared.redis_batch import read_batch
from shared.scripts import BatchPart, NotReplicated, execute_pipelined, queue_script, scripts_for
from shared.state_machine import LIVE_STATES as LIVE_STATES  # re-exported for api/ops_cli.py
from shared.state_machine import WriteResult


@dataclass(frozen=True)
class Command:
    """One command for a tenant's owner; its JSON form is what the mailbox holds."""

    id: str
    kind: str
    tenant: str
    at: float
    pairing_id: str = ""
    method: str = ""
    # E.164 number of a phone-code pairing: personal data, kept out of reprs and logs.
    phone: str = field(default="", repr=False)
    message_id: str = ""  # a send command's message (its text stays in the message record)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Command:
        return cls(**json.loads(raw))


#: A tenant's session and pairing hashes, as ``SessionStore.read`` gives them.
StateSnapshot = tuple[dict[str, str], dict[str, str]]


@dataclass(frozen=True)
class Taken:
    """The owner's next command (None: the mailbox is empty) and the state it runs on."""

    command: Command | None
    state: StateSnapshot


@dataclass(frozen=True)
class TakeOver:
    """What a new owner reads first (``SessionStore.take_over``)."""

    record: dict[bytes, bytes]  # the tenant record, raw, for the recovery cache
    state: StateSnapshot  # the session and pairing being taken over
    taken: Taken  # the first command, taken right after


@dataclass(frozen=True)
class Accepted:
    """A command accepted into the tenant's mailbox, and who owned the tenant then."""

    command: Command
    owner: str


class _TakeRead:
    """HGETALL of ``first`` (if any), then take_command.lua (acking ``done`` first, if
    given), then the session and pairing hashes; ``parse`` reads the replies of exactly
    these commands."""

    def __init__(self, take_command: Script, tenant: str, first: Sequence[str],
                 done: Command | None = None) -> None:
        self.tenant = tenant
        self.first = first
        self.done = done.to_json() if done is not None else ""
        self.script = take_command
        self.scripts = [self.script]

    def queue(self, pipe: Pipeline, owner_value: str) -> None:
        tenant = self.tenant
        for key in self.first:
            pipe.hgetall(key)
        script_keys = [keys.lease(tenant), keys.mailbox(tenant), keys.inflight(tenant)]
        queue_script(pipe, self.script, script_keys, [owner_value, self.done])
        pipe.hgetall(keys.session(tenant))
        pipe.hgetall(keys.pairing(tenant))

    def parse(self, replies: list[Any]) -> TakeOver:
        *first, raw, session_raw, pairing_raw = replies
        command = Command.from_json(raw) if raw else None
        taken = Taken(command, (_decode(session_raw), _decode(pairing_raw)))
        if not first:
            return TakeOver({}, taken.state, taken)
        record, session, pairing = first
        return TakeOver(record, (_decode(session), _decode(pairing)), taken)


def _as_float(value: str | None) -> float | None:
    return float(value) if value else None


class SessionStore:
    """Reads and transitions of tenant sessions; takes the Redis client and a clock.

    Every transition appends the events it causes to the tenant's stream in the
    same Lua step; ``on_webhook_events`` is told which of them to deliver.
    """

    def __init__(self, client: redis.Redis, clock: Clock | None = None, *,
                 events_maxlen: int = 1000,
                 on_webhook_events: WebhookDispatch | None = None,
                 replicas: tuple[int, int] = (0, 0)) -> None:
        """``replicas``: (count, timeout ms) that must acknowledge an API transition
        (a pairing begun, a command queued) before it is answered as accepted
        (``Settings.ack_replicas``); (0, 0): the primary's word is enough."""
        self._redis = client
        self._scripts = scripts_for(client)
        self._clock = clock or SystemClock()
        self.events_maxlen = events_maxlen
        self.on_webhook_events = on_webhook_events
        self.replicas = replicas

    @property
    def redis_client(self) -> redis.Redis:
        """The client this store talks through (the message store shares it)."""
        return self._redis

    # --- API side -------------------------------------------------------
    def begin_pairing(self, tenant: str, method: str, timeout_s: float,
                      phone: str = "") -> Accepted:
        """Atomically move ``tenant`` to pairing and queue the pair command.

        ``phone`` (E.164, for ``method == "phone"``) travels only in the mailbox
        command; the pairing record keeps a masked hint.
        """
        now = self._clock.time()
        pairing_id = f"p_{uuid.uuid4().hex[:16]}"
        command = Command(f"c_{uuid.uuid4().hex[:16]}", "pair", tenant, now, pairing_id, method,
                          phone)
        reply = self._run_marking_active(
            tenant,
            self._scripts.begin_pairing,
            [keys.session(tenant), keys.pairing(tenant), keys.mailbox(tenant),
             keys.lease(tenant), keys.qr(tenant), keys.events(tenant), keys.pair_code(tenant),
             keys.webhook(tenant), keys.webhook_pending(tenant)],
            [pairing_id, method, f"{now:.3f}", f"{timeout_s:.3f}", command.to_json(),
             self.events_maxlen, mask_phone(phone) if phone else ""],
        )
        status, detail = reply[0].decode(), reply[1].decode()
        if status == "busy":
            raise PairingInProgress(
                "a pairing for this tenant is already running", int(detail), tenant=tenant
            )
        if status == "connected":
            raise Conflict(
                "tenant is already connected; reset or log out before pairing again",
                tenant=tenant,
            )
        self._dispatch(tenant, reply[2:])
        return Accepted(command, _owner(detail))

    def enqueue(self, tenant: str, kind: str) -> Accepted:
        """Queue a reset, logout or resume command for the tenant's owner."""
        now = self._clock.time()
        command = Command(f"c_{uuid.uuid4().hex[:16]}", kind, tenant, now)
        reply = self._run_marking_active(
            tenant,
            self._scripts.enqueue_command,
            [keys.session(tenant), keys.mailbox(tenant), keys.lease(tenant),
             keys.events(tenant), keys.webhook(tenant), keys.webhook_pending(tenant)],
            [command.to_json(), kind, f"{now:.3f}", self.events_maxlen],
        )
        status, detail = reply[0].decode(), reply[1].decode()
        if status == "no_device":
            raise NotFound("tenant has no linked device to resume; pair first", tenant=tenant)
        if status == "busy":
            raise Conflict(f"tenant is {detail}; nothing to resume", tenant=tenant)
        self._dispatch(tenant, reply[2:])
        return Accepted(command, _owner(detail))

    def status(self, tenant: str) -> dict[str, Any]:
        """The tenant's state as the status endpoint shows it."""
        try:
            replies = read_batch(self._redis, self.status_commands(tenant))
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the status") from e
        return self.status_from(tenant, replies)

    @staticmethod
    def status_commands(tenant: str) -> list[tuple[str, ...]]:
        """The reads :meth:`status_from` needs (a caller may send them with reads of its own)."""
        return [("HGETALL", keys.session(tenant)), ("HGETALL", keys.pairing(tenant)),
                ("GET", keys.lease(tenant))]

    @staticmethod
    def status_from(tenant: str, replies: list[Any]) -> dict[str, Any]:
        """The status built from the replies of :meth:`status_commands`."""
        session_raw, pairing_raw, lease = replies
        session, pairing = _decode(session_raw), _decode(pairing_raw)
        last_error = json.loads(session["last_error"]) if session.get("last_error") else None
        return {
            "tenant": tenant,
            "state": session.get("state") or "idle",
            "pairing": {
                "id": pairing["id"],
                "method": pairing.get("method") or "qr",
                "status": pairing.get("status") or "queued",
                "started_at": _as_float(pairing.get("started_at")),
                "deadline_at": _as_float(pairing.get("deadline_at")),
                "ended_at": _as_float(pairing.get("ended_at")),
                **({"phone": pairing["phone_hint"]} if pairing.get("phone_hint") else {}),
            }
            if pairing.get("id")
            else None,
            "device": session.get("device") or None,
            "owner": _owner(lease.decode()) if lease else None,
            "updated_at": _as_float(session.get("updated_at")),
            "last_error": last_error,
        }

    def current_qr(self, tenant: str) -> dict[str, Any]:
        """The QR code shown now, or NotFound."""
        return self._current(tenant, keys.qr(tenant), "the QR code",
                             "no QR code to show: start a pairing first")

    def current_pair_code(self, tenant: str) -> dict[str, Any]:
        """The phone pairing code to enter now, or NotFound."""
        return self._current(tenant, keys.pair_code(tenant), "the pair code",
                             "no pair code: start a pairing with method phone and wait for it")

    def _current(self, tenant: str, key: str, what: str, missing: str) -> dict[str, Any]:
        """The JSON value of an expiring per-tenant key (QR, pair code), or NotFound."""
        try:
            raw = self._redis.get(key)
        except redis.RedisError as e:
            raise StoreUnavailable(f"could not reach Redis to read {what}") from e
        if raw is None:
            raise NotFound(missing, tenant=tenant)
        return dict(json.loads(raw))

    # --- owner side -----------------------------------------------------
    def fenced_write(
        self,
        tenant: str,
        fence: int,
        *,
        session: dict[str, str] | None = None,
        pairing: dict[str, str] | None = None,
        pairing_id: str | None = None,
        qr: dict[str, Any] | str | None = None,
        pair_code: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Apply a change if ``fence`` is still the newest; what it did (see ``WriteResult``).

        The owner calls it only through ``apply`` and a named write; tests and
        benchmarks that play an owner call it directly.

        The events the change causes are appended in the same step (see fenced_write.lua).
        """
        ops: dict[str, Any] = {}
        if session is not None:
            ops["session"] = {**session, "updated_at": f"{self._clock.time():.3f}"}
        if pairing is not None:
            ops["pairing"] = pairing
            if pairing_id:
                ops["pairing_id"] = pairing_id
        if qr is not None:
            ops["qr"] = qr
        if pair_code is not None:
            ops["pair_code"] = pair_code
        reply = self._run(
            self._scripts.fenced_write,
            [keys.fence(tenant), keys.session(tenant), keys.pairing(tenant), keys.qr(tenant),
             keys.events(tenant), keys.pair_code(tenant), keys.webhook(tenant),
             keys.webhook_pending(tenant)],
            [fence, json.dumps(ops), self.events_maxlen, f"{self._clock.time():.3f}"],
        )
        self._dispatch(tenant, reply[1:])
        return WriteResult(int(reply[0]))

    def apply(self, tenant: str, fence: int, write: OwnerWrite) -> WriteResult:
        """Apply one of the owner's named writes (``shared/owner_writes.py``) under ``fence``."""
        return self.fenced_write(tenant, fence, **write.changes())

    def read(self, tenant: str) -> tuple[dict[str, str], dict[str, str]]:
        """The raw session and pairing hashes (for the owner's decisions)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.session(tenant))
        pipe.hgetall(keys.pairing(tenant))
        try:
            session_raw, pairing_raw = pipe.execute()
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis to read the session") from e
        return _decode(session_raw), _decode(pairing_raw)

    def take_command(self, tenant: str, owner_value: str,
                     done: Command | None = None) -> Taken:
        """The owner's next command (the unfinished one first), or None, and the session
        and pairing hashes read right after taking it, in the same round trip.

        The command runs against that state, as ``read`` would give it one round
        trip later: a second read is a round trip on the path to the first QR.
        ``done``: the command just run, acked in the same step (``ack_command``'s
        round trip saved); not acked if ``owner_value`` no longer holds the lease.
        """
        read = _TakeRead(self._scripts.take_command, tenant, (), done)
        return self._take(read, owner_value).taken

    def take_over(self, tenant: str, owner_value: str) -> TakeOver:
        """A new owner's first reads: the tenant record (for the recovery cache), the
        session and pairing it takes over, then ``take_command``; one round trip.

        The command is only taken: if the take-over changes the state (it ends or
        resumes something), the owner runs it later, after the take-over, and
        ``take_command`` hands it over again (the unfinished one comes first).
        ``take_over_read`` sends the same reads in a lease grant's round trip.
        """
        return self._take(self.take_over_read(tenant), owner_value)

    def take_over_read(self, tenant: str) -> BatchPart[TakeOver]:
        """``take_over``'s reads, for ``LeaseKeeper.acquire(also=...)``; its
        ``parse`` turns the replies into a ``TakeOver``."""
        return _TakeRead(self._scripts.take_command, tenant,
                         (keys.tenant_record(tenant), keys.session(tenant), keys.pairing(tenant)))

    def _take(self, read: BatchPart[TakeOver], owner_value: str) -> TakeOver:
        try:
            replies = execute_pipelined(
                self._redis, lambda pipe: read.queue(pipe, owner_value), read.scripts)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e
        return read.parse(replies)

    def take_ahead(self, tenant: str, owner_value: str) -> Command | None:
        """The oldest reset or logout in the mailbox, moved ahead of the send in flight
        that cannot run now (``take_ahead.lua``); None if there is none, or if
        ``owner_value`` no longer holds the lease."""
        raw = self._run(
            self._scripts.take_ahead,
            [keys.lease(tenant), keys.mailbox(tenant), keys.inflight(tenant)],
            [owner_value],
        )
        return Command.from_json(raw) if raw else None

    def ack_command(self, tenant: str, owner_value: str, command: Command) -> None:
        """Mark ``command`` done so no later owner runs it again."""
        self._run(
            self._scripts.ack_command,
            [keys.lease(tenant), keys.inflight(tenant)],
            [owner_value, command.to_json()],
        )

    def _dispatch(self, tenant: str, event_ids: list[Any]) -> None:
        hand_off_webhooks(self._redis, self.on_webhook_events, tenant, event_ids)

    def _run_marking_active(
        self, tenant: str, script: Script, script_keys: list[str], args: list[Any]
    ) -> Any:
        """Run an API transition script and add ``tenant`` to ``wa:active`` in one round trip.

        ``wa:active`` is a global key, so it cannot be one of the script's keys
        (a Cluster needs one slot per script); it is only a hint for the claim
        scan, so marking a tenant whose transition was refused costs nothing:
        the next owner or the cleanup sweep takes it out again.
        """

        def queue(pipe: Pipeline) -> None:
            queue_script(pipe, script, script_keys, args)
            pipe.sadd(keys.ACTIVE, tenant)

        try:
            return execute_pipelined(self._redis, queue, [script], replicas=self.replicas)[0]
        except NotReplicated as e:
            raise StoreUnavailable(NOT_REPLICATED) from e
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e

    def _run(self, script: Any, script_keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=script_keys, args=args)
        except redis.RedisError as e:
            raise StoreUnavailable("could not reach Redis") from e


#: The 503's message when a write reached the primary but not its replicas in time.
NOT_REPLICATED = ("the write reached the Redis primary but no replica acknowledged it in "
                  "time, so a failover could still lose it; it may or may not take effect: "
                  "retry (a message with the same Idempotency-Key)")


def error_json(code: str, message: str, at: float, **extra: Any) -> str:
    """The JSON stored in ``last_error``; ``at`` is the writer's clock (unix seconds)."""
    return json.dumps({"code": code, "message": message, "at": round(at, 3), **extra})
