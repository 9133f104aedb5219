"""The sandbox's message rules: inboxes, held deliveries, receipts, duplicate violations."""

from __future__ import annotations

import pytest

from shared.sandbox.network import Network, SandboxError, Settings, account_for_tenant
from tests.shared.sandbox.test_network import messages, pair

CONTACT = "6281111111111"


@pytest.fixture
def net() -> Network:
    now = [1_000.0]
    return Network(Settings(qr_first_s=60, qr_next_s=20, qr_count=6, removal_delay_s=60),
                   lambda: now[0])


def online(net: Network, tenant: str) -> int:
    jid, keys = pair(net, tenant)
    conn = net.open_resume(tenant, jid, keys)
    assert conn is not None
    assert messages(net, conn)[0] == {"ev": "connected", "jid": jid}
    return conn


def test_send_reaches_the_inbox_and_a_delivery_receipt_is_held_until_acked(net: Network):
    conn = online(net, "t1")
    wa_id = net.messaging.send(conn, "m_1", f"{CONTACT}@s.whatsapp.net",
                               {"kind": "text", "text": "hi"})
    inbox = net.messaging.inbox(CONTACT)
    assert [(m["from"], m["text"], m["wa_message_id"]) for m in inbox["messages"]] == [
        (account_for_tenant("t1"), "hi", wa_id)]
    assert inbox["duplicates"] == []
    [receipt] = messages(net, conn)
    assert receipt["ev"] == "receipt" and receipt["status"] == "delivered"
    assert receipt["wa_message_id"] == wa_id
    # Not acked: a new connection of the account is offered it again.
    net.client_closed(conn)
    jid = net.connections[conn].device
    assert jid is not None
    keys = net.devices[jid].keys
    again = net.open_resume("t1", jid, keys)
    assert again is not None
    offered = messages(net, again)
    assert [m["ev"] for m in offered] == ["connected", "receipt"]
    net.messaging.ack(again, receipt["ack"])
    net.client_closed(again)
    third = net.open_resume("t1", jid, keys)
    assert third is not None
    assert [m["ev"] for m in messages(net, third)] == ["connected"]


def test_the_same_reference_delivered_twice_is_a_violation(net: Network):
    conn = online(net, "t1")
    chat = f"{CONTACT}@s.whatsapp.net"
    net.messaging.send(conn, "m_1", chat, {"kind": "text", "text": "once"})
    net.messaging.send(conn, "m_2", chat, {"kind": "text", "text": "other"})
    assert net.messaging.inbox(CONTACT)["duplicates"] == []
    net.messaging.send(conn, "m_1", chat, {"kind": "text", "text": "once"})
    [violation] = net.messaging.inbox(CONTACT)["duplicates"]
    assert violation["kind"] == "duplicate_delivery" and violation["ref"] == "m_1"


def test_inbound_is_held_while_the_tenant_has_no_connection(net: Network):
    jid, keys = pair(net, "t1")
    number = account_for_tenant("t1")
    sent = net.messaging.phone_send(CONTACT, number, "are you there?")
    conn = net.open_resume("t1", jid, keys)
    assert conn is not None
    connected, message = messages(net, conn)
    assert connected["ev"] == "connected"
    assert message["ev"] == "message" and message["text"] == "are you there?"
    assert message["wa_message_id"] == sent["wa_message_id"]
    assert message["from"] == f"{CONTACT}@s.whatsapp.net"
    # Offered, not acked: still held (the chaos checker tells pending from lost by it).
    assert net.messaging.held_for(number) == {"messages": [sent["wa_message_id"]]}
    net.messaging.ack(conn, message["ack"])
    assert net.messaging.held_for(number) == {"messages": []}


def test_read_sends_a_read_receipt_once(net: Network):
    conn = online(net, "t1")
    wa_id = net.messaging.send(conn, "m_1", f"{CONTACT}@s.whatsapp.net",
                               {"kind": "text", "text": "hi"})
    messages(net, conn)
    net.messaging.phone_read(CONTACT, wa_id)
    net.messaging.phone_read(CONTACT, wa_id)
    [read] = messages(net, conn)
    assert read["status"] == "read" and read["wa_message_id"] == wa_id
    with pytest.raises(SandboxError):
        net.messaging.phone_read(CONTACT, "nope")


def test_sending_needs_a_connected_client_and_a_jid(net: Network):
    conn = net.open_pairing("t1")
    assert conn is not None
    with pytest.raises(SandboxError):
        net.messaging.send(conn, "", f"{CONTACT}@s.whatsapp.net", {"text": "x"})
    live = online(net, "t2")
    with pytest.raises(ValueError):
        net.messaging.send(live, "", "not-a-jid", {"text": "x"})
    with pytest.raises(ValueError):
        net.messaging.phone_send("12", "34", "x")


def test_messages_survive_a_snapshot(net: Network):
    conn = online(net, "t1")
    net.messaging.send(conn, "m_1", f"{CONTACT}@s.whatsapp.net", {"kind": "text", "text": "x"})
    copy = Network(net.settings, net.clock)
    copy.restore(net.snapshot())
    assert copy.messaging.inbox(CONTACT) == net.messaging.inbox(CONTACT)
    assert copy.messaging.held == net.messaging.held
