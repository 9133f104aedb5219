"""The sandbox server over real sockets, in a real subprocess."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests

from tests.support.ports import wait_for
from tests.support.sandbox_proc import SandboxProcess


class WireClient:
    """A raw wire-protocol client: one JSON object per line each way."""

    def __init__(self, port: int, hello: dict[str, Any] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.sock.sendall(b"WAPAIR-SANDBOX/1\n")
        if hello is not None:
            self.send(hello)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        line = self.file.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def clients():
    made: list[WireClient] = []
    yield made
    for client in made:
        client.close()


def pair(sandbox: SandboxProcess, clients: list[WireClient], tenant: str) -> tuple[str, str]:
    """Pair over the wire; returns (jid, keys) after the forced 515 close."""
    client = WireClient(sandbox.port, {"op": "hello", "tenant": tenant, "mode": "pair"})
    clients.append(client)
    qr = client.recv()
    assert qr is not None and qr["ev"] == "qr" and qr["index"] == 0
    assert sandbox.scan(qr["code"])["tenant"] == tenant
    success = client.recv()
    assert success is not None and success["ev"] == "pair_success"
    assert client.recv() == {"ev": "stream_error", "code": 515}
    assert client.recv() is None
    return success["jid"], success["keys"]


def resume(sandbox, clients, tenant: str, jid: str, keys: str) -> WireClient:
    client = WireClient(sandbox.port, {"op": "hello", "tenant": tenant, "mode": "resume",
                                       "jid": jid, "keys": keys})
    clients.append(client)
    assert client.recv() == {"ev": "connected", "jid": jid}
    return client


def test_full_pair_flow_then_resume_ping_and_logout(sandbox, clients):
    jid, keys = pair(sandbox, clients, "acme")
    assert jid.endswith(":1@s.whatsapp.net")
    client = resume(sandbox, clients, "acme", jid, keys)
    client.send({"op": "ping"})
    assert client.recv() == {"ev": "pong"}
    rows = sandbox.connections("acme")
    assert [(r["mode"], r["end_reason"]) for r in rows] == [("pair", "pair_515"), ("resume", None)]
    client.send({"op": "logout"})
    assert client.recv() == {"ev": "logged_out", "reason": "client_logout", "on_connect": False}
    assert client.recv() is None
    again = WireClient(sandbox.port, {"op": "hello", "tenant": "acme", "mode": "resume",
                                      "jid": jid, "keys": keys})
    clients.append(again)
    assert again.recv() == {"ev": "logged_out", "reason": 401, "on_connect": True}
    assert sandbox.conflicts() == []


def test_unscanned_pairing_rotates_codes_then_times_out(sandbox, clients):
    client = WireClient(sandbox.port, {"op": "hello", "tenant": "slow", "mode": "pair"})
    clients.append(client)
    got = [client.recv() for _ in range(4)]
    assert [m["ev"] for m in got] == ["qr", "qr", "qr", "pairing_timeout"]
    assert [m["index"] for m in got[:3]] == [0, 1, 2]
    expected = [1, 0.5, 0.5]
    assert [m["expires_in"] for m in got[:3]] == pytest.approx(expected, abs=0.05)
    assert client.recv() is None
    [row] = sandbox.connections("slow")
    assert row["end_reason"] == "pairing_timeout"
    assert row["ended_at"] - row["started_at"] == pytest.approx(2.0, abs=0.3)
    response = sandbox.request("POST", "/phone/scan", {"code": got[2]["code"]})
    assert response.status_code == 404 and "error" in response.json()


def test_same_account_overlap_is_recorded_and_the_newest_device_removed(sandbox, clients):
    old_jid, old_keys = pair(sandbox, clients, "dup")
    new_jid, new_keys = pair(sandbox, clients, "dup")
    old = resume(sandbox, clients, "dup", old_jid, old_keys)
    new = resume(sandbox, clients, "dup", new_jid, new_keys)
    [conflict] = sandbox.conflicts()
    assert conflict["kind"] == "same_account" and conflict["tenant"] == "dup"
    assert conflict["devices"] == sorted([old_jid, new_jid])
    assert new.recv() == {"ev": "logged_out", "reason": 401, "on_connect": False,
                          "detail": "device_removed"}
    assert new.recv() is None
    reasons = {r["device"]: r["end_reason"] for r in sandbox.connections("dup")
               if r["mode"] == "resume"}
    assert reasons == {old_jid: None, new_jid: "device_removed"}
    old.send({"op": "ping"})
    assert old.recv() == {"ev": "pong"}


def test_same_device_twice_replaces_the_older_stream(sandbox, clients):
    jid, keys = pair(sandbox, clients, "twin")
    older = resume(sandbox, clients, "twin", jid, keys)
    resume(sandbox, clients, "twin", jid, keys)
    assert older.recv() == {"ev": "stream_replaced"}
    assert older.recv() is None
    assert [c["kind"] for c in sandbox.conflicts()] == ["same_device"]
    assert [r["end_reason"] for r in sandbox.connections("twin")][-2:] == ["stream_replaced", None]


def test_pairing_overlap_unlink_and_ban(sandbox, clients):
    jid, keys = pair(sandbox, clients, "multi")
    live = resume(sandbox, clients, "multi", jid, keys)
    clients.append(WireClient(sandbox.port, {"op": "hello", "tenant": "multi", "mode": "pair"}))
    wait_for(sandbox.conflicts, 5, "a recorded conflict")
    assert [c["kind"] for c in sandbox.conflicts()] == ["pairing_overlap"]
    sandbox.ban(jid, expire_s=30)
    assert live.recv() == {"ev": "temporary_ban", "code": 402, "expire_s": 30}
    banned = WireClient(sandbox.port, {"op": "hello", "tenant": "multi", "mode": "resume",
                                       "jid": jid, "keys": keys})
    clients.append(banned)
    assert banned.recv()["ev"] == "temporary_ban"
    sandbox.unlink(jid)
    assert sandbox.request("POST", "/phone/unlink", {"jid": jid}).status_code == 404


def test_outage_drops_connections_and_refuses_new_ones(sandbox, clients):
    jid, keys = pair(sandbox, clients, "dark")
    live = resume(sandbox, clients, "dark", jid, keys)
    sandbox.control(outage=True)
    assert live.recv() is None
    refused = WireClient(sandbox.port, {"op": "hello", "tenant": "dark", "mode": "resume",
                                        "jid": jid, "keys": keys})
    clients.append(refused)
    assert refused.recv() is None
    sandbox.control(outage=False)
    resume(sandbox, clients, "dark", jid, keys)
    assert sandbox.connections("dark")[1]["end_reason"] == "outage"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/phone/scan", b"{not json"),
        ("POST", "/phone/scan", b"[1, 2]"),
        ("POST", "/phone/scan", b"{}"),
        ("POST", "/phone/scan", b'{"code": "x", "phone": "12ab"}'),
        ("POST", "/phone/ban", b'{"jid": "1:1@s.whatsapp.net", "expire_s": "soon"}'),
        ("POST", "/control", b'{"qr_count": 0}'),
        ("POST", "/control", b'{"warp": 9}'),
        ("GET", "/phone/held/12ab", None),
    ],
)
def test_bad_http_input_gets_a_400_json_error(sandbox, method, path, body):
    before = sandbox._ok("GET", "/control")
    response = requests.request(method, sandbox.url + path, data=body, timeout=5,
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(response.json()["error"], str)
    assert sandbox._ok("GET", "/control") == before


def test_unknown_path_is_a_404_json_error(sandbox):
    response = sandbox.request("GET", "/nope")
    assert response.status_code == 404 and "error" in response.json()


def test_garbage_first_line_gets_a_400(sandbox):
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 400 ") and b'"error"' in reply
