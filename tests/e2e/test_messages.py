"""Messages end to end: real API, workers, hosts and the sandbox network; and through failover."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from shared import keys
from shared.sandbox.records import account_for_tenant
from shared.state import Command
from tests.e2e.conftest import LEASE_TTL_S, Tenant, pair_and_connect
from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Worker

pytestmark = pytest.mark.slow

FINISHED = {"sent", "delivered", "read", "failed", "unknown"}


def contact(i: int) -> str:
    return f"62811{uuid.uuid4().int % 10**7:07d}{i}"


def send(tenant: Tenant, api: Api, to: str, text: str, **headers: str) -> dict[str, Any]:
    response = requests.post(f"{api.url}/api/whatsapp/messages", timeout=10,
                             json={"to": "+" + to, "text": text},
                             headers={**tenant.headers, **headers})
    assert response.status_code == 202, response.text
    return dict(response.json())


def message(tenant: Tenant, api: Api, message_id: str) -> dict[str, Any]:
    response = tenant.call(api, "GET", f"/api/whatsapp/messages/{message_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_status(tenant: Tenant, api: Api, message_id: str, statuses: set[str],
                timeout: float = 15) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        now = message(tenant, api, message_id)
        return now if now["status"] in statuses else None

    return wait_for(reached, timeout, f"message {message_id} to be one of {statuses}")


def test_send_receive_receipts_and_idempotent_retries(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    api = start_api("api-msg")
    only = start_worker("msg1", SEND_RATE_PER_TENANT="0")
    tenant = Tenant(api, f"msg-{uuid.uuid4().hex[:10]}")
    pair_and_connect(tenant, api, sandbox)
    contacts = [contact(i) for i in range(3)]
    first = send(tenant, api, contacts[0], "hello 0", **{"Idempotency-Key": "k-0"})
    retried = send(tenant, api, contacts[0], "hello 0", **{"Idempotency-Key": "k-0"})
    assert retried["id"] == first["id"]
    ids = [first["id"]] + [send(tenant, api, c, f"hello {i}")["id"]
                           for i, c in enumerate(contacts) if i]
    done = [wait_status(tenant, api, i, {"delivered"}) for i in ids]
    for i, (number, record) in enumerate(zip(contacts, done, strict=True)):
        inbox = sandbox.inbox(number)
        assert [m["text"] for m in inbox["messages"]] == [f"hello {i}"], "exactly once"
        assert inbox["duplicates"] == []
        assert inbox["messages"][0]["wa_message_id"] == record["wa_message_id"]
        assert record["sent_at"] and record["delivered_at"] and record["error"] is None

    sandbox.phone_read(contacts[1], done[1]["wa_message_id"])
    read = wait_status(tenant, api, ids[1], {"read"})
    assert read["read_at"] >= read["delivered_at"]

    sent = sandbox.phone_send(contacts[2], account_for_tenant(tenant.id), "a reply")

    def received() -> list[dict[str, Any]] | None:
        listed = tenant.call(api, "GET", "/api/whatsapp/messages?direction=in").json()
        return listed["messages"] or None

    [inbound] = wait_for(received, 10, "the inbound message")
    assert inbound["text"] == "a reply" and inbound["wa_message_id"] == sent["wa_message_id"]
    assert inbound["from"] == f"{contacts[2]}@s.whatsapp.net"
    history = tenant.call(api, "GET", "/api/whatsapp/history?limit=200").json()["events"]
    kinds = [e["kind"] for e in history]
    assert kinds.count("message") == 1
    assert {"id": ids[1], "status": "read"} in [e["data"] for e in history
                                                if e["kind"] == "message_status"]
    outbound = tenant.call(api, "GET", "/api/whatsapp/messages?direction=out&limit=10").json()
    assert {m["id"] for m in outbound["messages"]} == set(ids)
    only.stop()  # the next tests' workers must be the only ones that can claim


def test_owner_killed_mid_batch_no_duplicate_and_at_most_one_unknown(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker],
    sandbox: SandboxProcess, rclient: redis.Redis,
) -> None:
    api = start_api("api-msg-failover")
    workers = {w.worker_id: w for w in (start_worker("mk1", SEND_RATE_PER_TENANT="20"),
                                        start_worker("mk2", SEND_RATE_PER_TENANT="20"))}
    tenant = Tenant(api, f"msgk-{uuid.uuid4().hex[:10]}")
    st = pair_and_connect(tenant, api, sandbox)
    number = contact(9)
    ids = [send(tenant, api, number, f"batch {i}")["id"] for i in range(40)]
    # Kill the owner while the batch is being sent (paced at about 20 a second).
    wait_for(lambda: message(tenant, api, ids[5])["status"] in FINISHED, 10, "sends to start")
    workers[st["owner"]].kill()
    killed_at = time.time()
    # A contact writes while no worker owns the tenant: the server holds it.
    held = sandbox.phone_send(contact(8), account_for_tenant(tenant.id), "while you were out")

    finals = [wait_status(tenant, api, i, FINISHED | {"delivered", "read"},
                          timeout=LEASE_TTL_S + 30) for i in ids]
    statuses = [m["status"] for m in finals]
    inbox = sandbox.inbox(number)
    texts = [m["text"] for m in inbox["messages"]]
    print(f"\nafter SIGKILL of the owner: {statuses.count('delivered')} delivered, "
          f"{statuses.count('unknown')} unknown, {statuses.count('failed')} failed; "
          f"finished {time.time() - killed_at:.1f} s after the kill")
    assert inbox["duplicates"] == [] and len(texts) == len(set(texts)), "no one gets it twice"
    assert statuses.count("unknown") <= 1, "only the message being handed over"
    assert "failed" not in statuses
    for i, record in enumerate(finals):
        if record["status"] != "unknown":
            assert texts.count(f"batch {i}") == 1, f"batch {i} delivered once"

    # The window in which a death leaves a message unknown: 'sending' to 'sent'.
    windows = []
    for i in ids:
        sending_at, sent_at = rclient.hmget(keys.message(tenant.id, i), "sending_at", "sent_at")
        if sending_at and sent_at:
            windows.append(float(sent_at) - float(sending_at))
    print(f"sending->sent window over {len(windows)} sends: p50 "
          f"{statistics.median(windows) * 1000:.1f} ms, max {max(windows) * 1000:.1f} ms")

    def received() -> list[dict[str, Any]] | None:
        listed = tenant.call(api, "GET", "/api/whatsapp/messages?direction=in").json()
        return [m for m in listed["messages"] if m["wa_message_id"] == held["wa_message_id"]]

    [inbound] = wait_for(received, LEASE_TTL_S + 15, "the message held while unowned")
    assert inbound["text"] == "while you were out"
    assert sandbox.violations() == []
    for worker in workers.values():
        if worker.alive():
            worker.stop()


def test_a_send_cut_short_by_death_ends_unknown_unless_at_least_once(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker],
    sandbox: SandboxProcess, rclient: redis.Redis,
) -> None:
    """The owner dies between recording 'sending' and WhatsApp's answer (set up here by
    writing what it leaves behind): the next owner records 'unknown' and sends nothing,
    except for a message that opted into at-least-once."""
    api = start_api("api-msg-unknown")
    workers = {w.worker_id: w for w in (start_worker("mu1", SEND_RATE_PER_TENANT="0"),
                                        start_worker("mu2", SEND_RATE_PER_TENANT="0"))}
    tenant = Tenant(api, f"msgu-{uuid.uuid4().hex[:10]}")
    st = pair_and_connect(tenant, api, sandbox)
    number = contact(7)
    once = send(tenant, api, number, "at most once")["id"]
    wait_status(tenant, api, once, {"delivered"})
    workers[st["owner"]].kill()
    cut = []
    for text, retry in (("cut short", "at_most_once"), ("cut short, retried", "at_least_once")):
        message_id = f"m_cut{uuid.uuid4().hex[:12]}"
        command = Command(f"c_{uuid.uuid4().hex[:16]}", "send", tenant.id, time.time(),
                          message_id=message_id)
        rclient.hset(keys.message(tenant.id, message_id), mapping={
            "id": message_id, "direction": "out", "to": "+" + number,
            "chat": f"{number}@s.whatsapp.net", "kind": "text", "text": text, "retry": retry,
            "status": "sending", "created_at": f"{time.time():.3f}",
            "sending_at": f"{time.time():.3f}"})
        rclient.zadd(keys.outbox(tenant.id), {message_id: time.time()})
        # The first is the dead owner's command in flight, the second waits behind it.
        rclient.rpush(keys.inflight(tenant.id) if not cut else keys.mailbox(tenant.id),
                      command.to_json())
        cut.append(message_id)
    unknown = wait_status(tenant, api, cut[0], {"unknown"}, timeout=LEASE_TTL_S + 15)
    assert unknown["error"]["code"] == "outcome_unknown"
    wait_status(tenant, api, cut[1], {"delivered"}, timeout=10)
    texts = [m["text"] for m in sandbox.inbox(number)["messages"]]
    assert texts == ["at most once", "cut short, retried"]
    assert rclient.zcard(keys.outbox(tenant.id)) == 0


def test_a_temporary_ban_pauses_the_outbox_and_it_resumes_by_itself_at_the_expiry(
    start_api: Callable[..., Api], start_worker: Callable[..., Worker], sandbox: SandboxProcess
) -> None:
    """The sandbox bans the device for 4 s: the tenant shows reconnecting with the ban,
    a message sent meanwhile waits (queued, not failed), and once the ban has expired
    the owner reconnects by itself and sends it, once."""
    api = start_api("api-msg-ban")
    only = start_worker("mb1", SEND_RATE_PER_TENANT="0")
    tenant = Tenant(api, f"msgb-{uuid.uuid4().hex[:10]}")
    st = pair_and_connect(tenant, api, sandbox)
    number = contact(5)
    sandbox.ban(st["device"], expire_s=4.0, code=402)
    banned_at = time.monotonic()
    banned = tenant.wait_state(api, "reconnecting", 5)
    assert banned["last_error"]["code"] == "temporary_ban"
    assert banned["last_error"]["ban_code"] == 402
    waiting = send(tenant, api, number, "after the ban")["id"]
    time.sleep(1.0)  # the ban is the sandbox's, on its own clock: real time passes
    assert message(tenant, api, waiting)["status"] == "queued"
    assert tenant.status(api)["state"] == "reconnecting"

    done = wait_status(tenant, api, waiting, {"delivered"}, timeout=20)
    assert time.monotonic() - banned_at >= 4.0, "not before the ban's expiry"
    assert tenant.status(api)["state"] == "connected"
    assert [m["text"] for m in sandbox.inbox(number)["messages"]] == ["after the ban"]
    assert done["error"] is None
    resumes = [c for c in sandbox.connections(tenant.id) if c["mode"] == "resume"]
    refused = [c for c in resumes if c["end_reason"] == "temporary_ban"]
    # The banned connection, and no resume tried while the ban lasted.
    assert len(refused) == 1 and resumes[-1]["ended_at"] is None
    assert sandbox.conflicts() == [] and sandbox.violations() == []
    only.stop()
