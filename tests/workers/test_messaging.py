"""The owner's side of messages against real Redis and a scripted client: at most once,
receipts, inbound recorded once, and a fence that stops a send."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared import keys
from shared.clock import ManualClock
from shared.config import load_settings
from shared.messages import MessageStore
from shared.state import Command
from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from tests.workers.scripted_backend import ScriptedBackend, ScriptedSession
from tests.workers.test_session_host import owned_connected
from workers.host.process import HostCallFailed
from workers.session_host import SessionHost

CHAT = "6281234567890@s.whatsapp.net"


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def host(booted_redis: redis.Redis, redis_url: str, backend: ScriptedBackend,
         clock: ManualClock) -> Iterator[SessionHost]:
    settings = load_settings({"redis_url": redis_url, "lease_ttl_s": 15,
                              "redis_loss_window_s": 0, "send_rate_per_tenant": 0},
                             environ={})
    client = redis.Redis.from_url(redis_url)
    h = SessionHost(client, settings, backend, "w-msg", clock=clock,
                    send_kick=lambda t, o, n: None)
    assert h.register()  # the first heartbeat, as start() writes it
    yield h
    h.shutdown(1)
    client.close()


@pytest.fixture(autouse=True)
def forget_the_tenant(booted_redis: redis.Redis, tenant_id: str) -> Iterator[None]:
    """Leave nothing another test's SessionHost would claim (they share the Redis): a
    connected tenant with a send waiting would hold that host's drain for seconds."""
    yield
    booted_redis.srem(keys.ACTIVE, tenant_id)
    for key in booted_redis.scan_iter(f"wa:{{{tenant_id}}}:*"):
        booted_redis.delete(key)


def accept(client: redis.Redis, tenant: str, text: str = "hi", retry: str = "at_most_once",
           ) -> str:
    record = {"to": "+6281234567890", "chat": CHAT, "kind": "text", "text": text,
              "retry": retry}
    return MessageStore(client).accept(tenant, record).id


def record(client: redis.Redis, tenant: str, message_id: str) -> dict[str, str]:
    raw = client.hgetall(keys.message(tenant, message_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def wait_status(client: redis.Redis, tenant: str, message_id: str, status: str) -> dict:
    return wait_for(lambda: (r := record(client, tenant, message_id))["status"] == status and r,
                    5, f"message {message_id} {status}")


def events(client: redis.Redis, tenant: str, kind: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"data"]) for _, f in client.xrange(keys.events(tenant))
            if f[b"kind"] == kind.encode()]


def connected(host: SessionHost, client: redis.Redis, backend: ScriptedBackend,
              tenant: str) -> ScriptedSession:
    session = owned_connected(host, client, backend, tenant)
    wait_for(lambda: host.sessions[tenant].online.is_set(), 5, "the client online")
    # The resume's drain done: else it may take a message the test accepts next while
    # the test's own event is half handled (online cleared, its state not yet written).
    wait_for(host.drains.idle, 5, "the resume's drain to finish")
    return session


def test_a_send_goes_once_then_receipts_move_it_to_delivered_and_read(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    session.answer = lambda chat, content: "WA-1"
    message_id = accept(booted_redis, tenant_id, "hello")
    host.kick(tenant_id)
    sent = wait_status(booted_redis, tenant_id, message_id, "sent")
    assert session.sent == [(CHAT, {"kind": "text", "ref": message_id, "text": "hello"})]
    assert sent["wa_message_id"] == "WA-1" and float(sent["sent_at"]) > 0
    assert booted_redis.zcard(keys.outbox(tenant_id)) == 0
    session.emit(EventKind.RECEIPT, wa_message_id="WA-1", status="delivered", at=5.0, ack="a1")
    wait_status(booted_redis, tenant_id, message_id, "delivered")
    session.emit(EventKind.RECEIPT, wa_message_id="WA-1", status="read", at=6.0, ack="a2")
    read = wait_status(booted_redis, tenant_id, message_id, "read")
    assert read["read_at"] == "6.000" and read["delivered_at"] == "5.000"
    assert session.acked == ["a1", "a2"]
    assert [e["status"] for e in events(booted_redis, tenant_id, "message_status")] == [
        "queued", "sending", "sent", "delivered", "read"]
    host.kick(tenant_id)  # a duplicate kick sends nothing again
    assert len(session.sent) == 1


def test_a_receipt_that_beats_the_sends_answer_is_applied_after_it(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)

    def answer(chat: str, content: dict[str, Any]) -> str:
        session.emit(EventKind.RECEIPT, wa_message_id="WA-early", status="delivered", at=1.0,
                     ack="r1")
        return "WA-early"

    session.answer = answer
    message_id = accept(booted_redis, tenant_id)
    host.kick(tenant_id)
    wait_status(booted_redis, tenant_id, message_id, "delivered")
    assert session.acked == ["r1"]


def test_a_receipt_for_a_previous_owners_send_is_found_in_the_redis_index(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    message_id = accept(booted_redis, tenant_id)
    # As the previous owner left it: 'sent', indexed in Redis, unknown to this session.
    booted_redis.hset(keys.message(tenant_id, message_id),
                      mapping={"status": "sent", "wa_message_id": "WA-before"})
    booted_redis.hset(keys.wa_message_ids(tenant_id), "WA-before", message_id)
    booted_redis.delete(keys.mailbox(tenant_id))
    session.emit(EventKind.RECEIPT, wa_message_id="WA-before", status="delivered", at=2.0,
                 ack="r1")
    assert wait_status(booted_redis, tenant_id, message_id, "delivered")["delivered_at"] == (
        "2.000")
    assert session.acked == ["r1"]


@pytest.mark.parametrize(("retry", "final", "sends"), [("at_most_once", "unknown", 0),
                                                       ("at_least_once", "sent", 1)])
def test_a_message_found_sending_was_cut_short_and_is_not_resent_by_default(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
    retry: str, final: str, sends: int,
) -> None:
    booted_redis.hset(keys.session(tenant_id), mapping={"state": "connected",
                                                        "device": "6281:5@s.whatsapp.net"})
    message_id = accept(booted_redis, tenant_id, retry=retry)
    # What a dead owner leaves: the message 'sending', its command in flight.
    [raw] = booted_redis.lrange(keys.mailbox(tenant_id), 0, -1)
    booted_redis.delete(keys.mailbox(tenant_id))
    booted_redis.rpush(keys.inflight(tenant_id), raw)
    booted_redis.hset(keys.message(tenant_id, message_id), "status", "sending")
    session = connected(host, booted_redis, backend, tenant_id)
    done = wait_status(booted_redis, tenant_id, message_id, final)
    assert len(session.sent) == sends
    if final == "unknown":
        assert json.loads(done["error"])["code"] == "outcome_unknown"
    assert booted_redis.llen(keys.inflight(tenant_id)) == 0
    assert booted_redis.zcard(keys.outbox(tenant_id)) == 0


@pytest.mark.parametrize("retry", ["at_most_once", "at_least_once"])
def test_a_connected_owner_finding_a_message_sending_cuts_it_short_too(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
    retry: str,
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    message_id = accept(booted_redis, tenant_id, retry=retry)
    booted_redis.hset(keys.message(tenant_id, message_id), "status", "sending")
    host.kick(tenant_id)
    done = wait_status(booted_redis, tenant_id, message_id,
                       "sent" if retry == "at_least_once" else "unknown")
    assert len(session.sent) == (1 if retry == "at_least_once" else 0)
    assert booted_redis.llen(keys.inflight(tenant_id)) == 0
    if retry == "at_most_once":
        assert json.loads(done["error"])["code"] == "outcome_unknown"


def test_a_media_message_is_fetched_before_it_is_recorded_sending(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    seen: list[str] = []

    def answer(chat: str, content: dict[str, Any]) -> str:
        seen.append(record(booted_redis, tenant_id, content["ref"])["status"])
        return "WA-img"

    session.answer = answer
    message_id = MessageStore(booted_redis).accept(
        tenant_id, {"to": "+6281234567890", "chat": CHAT, "kind": "image",
                    "mime_type": "image/png", "caption": "c"}, media=b"\x89PNG").id
    host.kick(tenant_id)
    wait_status(booted_redis, tenant_id, message_id, "sent")
    [(_, content)] = session.sent
    assert content["kind"] == "image" and content["media_base64"] == "iVBORw==", content
    assert seen == ["sending"], "recorded 'sending' before the client had it"
    assert [e["status"] for e in events(booted_redis, tenant_id, "message_status")] == [
        "queued", "sending", "sent"], "one 'sending', after the checks"


@pytest.mark.parametrize(("error", "final"), [
    (HostCallFailed("send failed in the connection host: refused", answered=True), "failed"),
    (HostCallFailed("send: the connection host is gone"), "unknown"),
])
def test_a_refused_send_fails_and_an_unanswered_one_is_unknown(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
    error: Exception, final: str,
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)

    def answer(chat: str, content: dict[str, Any]) -> str:
        raise error

    session.answer = answer
    message_id = accept(booted_redis, tenant_id)
    host.kick(tenant_id)
    wait_status(booted_redis, tenant_id, message_id, final)
    assert len(session.sent) == 1


def test_a_send_no_host_could_take_waits_and_goes_once_the_client_is_back(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    """The pool's answer while a dead host's sessions wait to reopen: not 'unknown' (a
    chaos run had a second unknown per host death from it), queued again and sent."""
    session = connected(host, booted_redis, backend, tenant_id)
    answers = iter([HostCallFailed("tenant t: not connected (no live client to send with)",
                                   answered=True)])

    def answer(chat: str, content: dict[str, Any]) -> str:
        error = next(answers, None)
        if error is not None:
            raise error
        return "3EB0BACK"

    session.answer = answer
    message_id = accept(booted_redis, tenant_id)

    def sent_after_a_mailbox_check() -> dict[str, str] | None:
        host.kick(tenant_id)  # the maintenance tick's check of mail cut short, on demand
        now = record(booted_redis, tenant_id, message_id)
        return now if now["status"] == "sent" else None

    sent = wait_for(sent_after_a_mailbox_check, 5, "the send to go on the next check")
    assert sent["wa_message_id"] == "3EB0BACK" and len(session.sent) == 2
    statuses = [e["status"] for e in events(booted_redis, tenant_id, "message_status")]
    assert statuses == ["queued", "sending", "queued", "sending", "sent"]


def test_a_send_answered_after_a_handover_began_is_still_recorded_sent(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    """A warm shutdown hands the session over while WhatsApp takes the message: the lease
    (and its fence) is still this worker's, so 'sent' is recorded, not left 'sending' for
    the next owner to call 'unknown' (a chaos rolling restart showed one)."""
    session = connected(host, booted_redis, backend, tenant_id)

    def answer(chat: str, content: dict[str, Any]) -> str:
        host.sessions[tenant_id].handover()
        return "3EB0HANDED"

    session.answer = answer
    message_id = accept(booted_redis, tenant_id)
    host.kick(tenant_id)
    assert wait_status(booted_redis, tenant_id, message_id, "sent")["wa_message_id"] == (
        "3EB0HANDED")


def test_a_send_a_handover_cut_off_before_the_client_took_it_is_queued_again(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    """The handover closes the client between 'sending' and the hand-off (the pool then
    answers "not connected"): the message goes back to queued for the next owner, not
    left 'sending' for it to call unknown."""
    session = connected(host, booted_redis, backend, tenant_id)

    def answer(chat: str, content: dict[str, Any]) -> str:
        host.sessions[tenant_id].handover()
        raise HostCallFailed("tenant t: not connected (no live client to send with)",
                             answered=True)

    session.answer = answer
    message_id = accept(booted_redis, tenant_id)
    host.kick(tenant_id)
    wait_for(lambda: session.sent, 5, "the attempt")
    wait_status(booted_redis, tenant_id, message_id, "queued")
    statuses = [e["status"] for e in events(booted_redis, tenant_id, "message_status")]
    assert statuses == ["queued", "sending", "queued"]


def test_a_stale_fence_stops_the_send_before_the_client_gets_it(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    booted_redis.incr(keys.fence(tenant_id))  # another worker was granted the tenant
    message_id = accept(booted_redis, tenant_id)
    host.kick(tenant_id)
    wait_for(lambda: host.sessions.get(tenant_id) is None or host.sessions[tenant_id].fenced,
             5, "the session fenced")
    assert session.sent == []
    assert record(booted_redis, tenant_id, message_id)["status"] == "queued"


def test_a_send_for_a_tenant_that_is_not_live_fails(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    message_id = accept(booted_redis, tenant_id)
    session.emit(EventKind.STREAM_REPLACED)
    host.kick(tenant_id)
    failed = wait_status(booted_redis, tenant_id, message_id, "failed")
    assert json.loads(failed["error"])["code"] == "not_connected"
    assert session.sent == []


def test_an_inbound_message_delivered_twice_is_recorded_and_announced_once(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    acks = itertools.count()
    for _ in range(2):
        session.emit(EventKind.MESSAGE, wa_message_id="3AXYZ", text="hello",
                     chat="628111@s.whatsapp.net", at=7.0, type="text",
                     ack=f"m{next(acks)}", **{"from": "628111@s.whatsapp.net"})
    wait_for(lambda: len(session.acked) == 2, 5, "both deliveries acked")
    [event] = events(booted_redis, tenant_id, "message")
    assert event == {"id": "in_3AXYZ", "from": "628111@s.whatsapp.net",
                     "chat": "628111@s.whatsapp.net", "at": 7.0, "wa_message_id": "3AXYZ",
                     "kind": "text", "text": "hello"}
    shown = MessageStore(booted_redis).get(tenant_id, "in_3AXYZ")
    assert shown["direction"] == "in" and shown["text"] == "hello"
    assert booted_redis.zcard(keys.messages_index(tenant_id, "in")) == 1


def test_command_json_of_a_send_names_only_the_message(booted_redis: redis.Redis,
                                                       tenant_id: str) -> None:
    booted_redis.hset(keys.session(tenant_id), "state", "connected")
    message_id = accept(booted_redis, tenant_id, "secret text")
    [raw] = booted_redis.lrange(keys.mailbox(tenant_id), 0, -1)
    assert b"secret" not in raw and Command.from_json(raw).message_id == message_id


def test_a_temporary_ban_pauses_the_outbox_until_its_expiry_then_resumes_by_itself(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
    clock: ManualClock,
) -> None:
    """The manual clock stands for the ban's 5 s: nothing opens and nothing is sent before
    it has passed; then the tick resumes the device and the queued message goes."""
    session = connected(host, booted_redis, backend, tenant_id)
    session.emit(EventKind.TEMPORARY_BAN, code=101, expire_s=5.0)
    status = {k.decode(): v.decode() for k, v in
              booted_redis.hgetall(keys.session(tenant_id)).items()}
    assert status["state"] == "reconnecting"
    error = json.loads(status["last_error"])
    assert error["code"] == "temporary_ban" and error["ban_code"] == 101
    assert error["until"] == pytest.approx(clock.time() + 5.0)
    assert session.closed.is_set() and backend.live(tenant_id) == []

    message_id = accept(booted_redis, tenant_id)  # reconnecting: accepted, and it waits
    host.kick(tenant_id)
    clock.advance(4.0)
    host.tick()
    host.kick(tenant_id)
    wait_for(lambda: booted_redis.llen(keys.mailbox(tenant_id)) == 0, 5, "the send taken")
    assert record(booted_redis, tenant_id, message_id)["status"] == "queued"
    assert backend.live(tenant_id) == [], "no client before the expiry"
    assert host.sessions[tenant_id].lease.tenant == tenant_id, "the lease is kept"

    clock.advance(1.5)
    host.tick()
    [again] = wait_for(lambda: backend.live(tenant_id), 5, "the resume after the ban")
    assert again.jid == session.jid
    again.emit(EventKind.CONNECTED, jid=session.jid)

    def sent_after_a_mailbox_check() -> dict[str, str] | None:
        host.kick(tenant_id)  # the tick's check of mail cut short, on demand
        now = record(booted_redis, tenant_id, message_id)
        return now if now["status"] == "sent" else None

    wait_for(sent_after_a_mailbox_check, 5, "the paused send to go")
    assert [c["text"] for _, c in again.sent] == ["hi"] and session.sent == []
    assert booted_redis.hget(keys.session(tenant_id), "state") == b"connected"


@pytest.mark.parametrize("kind", ["logout", "reset"])
def test_a_logout_or_reset_behind_a_send_a_ban_holds_runs_at_once_and_the_send_fails_after(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
    clock: ManualClock, kind: str,
) -> None:
    """A ban can last hours: a reset or logout behind the send it holds goes ahead of it
    (take_ahead.lua), not after the expiry; the send then runs against the logged-out
    tenant and fails as not connected, never sent."""
    from shared.state import SessionStore

    session = connected(host, booted_redis, backend, tenant_id)
    session.emit(EventKind.TEMPORARY_BAN, code=101, expire_s=3600.0)
    waiting = accept(booted_redis, tenant_id, "held by the ban")
    host.kick(tenant_id)
    wait_for(lambda: booted_redis.llen(keys.inflight(tenant_id)) == 1, 5, "the send in flight")
    second = accept(booted_redis, tenant_id, "queued behind it")
    SessionStore(booted_redis, clock).enqueue(tenant_id, kind)
    host.kick(tenant_id)

    wait_for(lambda: booted_redis.hget(keys.session(tenant_id), "state") == b"idle", 5,
             f"the {kind} run during the ban")
    device = booted_redis.hget(keys.session(tenant_id), "device")
    assert (device in (None, b"")) == (kind == "logout"), "a logout unlinks, a reset does not"
    for message_id in (waiting, second):
        wait_status(booted_redis, tenant_id, message_id, "failed")
        assert json.loads(record(booted_redis, tenant_id, message_id)["error"])["code"] == (
            "not_connected")
    assert booted_redis.llen(keys.mailbox(tenant_id)) == 0
    assert booted_redis.llen(keys.inflight(tenant_id)) == 0
    assert session.sent == [] and backend.live(tenant_id) == []


def test_a_temporary_ban_with_no_expiry_still_ends_the_session(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
) -> None:
    session = connected(host, booted_redis, backend, tenant_id)
    session.emit(EventKind.TEMPORARY_BAN, code=101, expire_s=0)  # no expiry: as before
    assert booted_redis.hget(keys.session(tenant_id), "state") == b"failed"
    assert host.sessions.get(tenant_id) is None or host.sessions[tenant_id].banned_until is None


def test_accept_names_the_owner_by_its_worker_id_for_the_kick(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend, tenant_id: str,
) -> None:
    """The kick goes to ``wapair.w.<worker id>``: with the lease's token left on (as it
    was), no worker consumed that queue and every send waited for a mailbox check."""
    connected(host, booted_redis, backend, tenant_id)
    record = {"to": "+6281234567890", "chat": CHAT, "kind": "text", "text": "hi",
              "retry": "at_most_once"}
    assert MessageStore(booted_redis).accept(tenant_id, record).owner == host.worker_id
