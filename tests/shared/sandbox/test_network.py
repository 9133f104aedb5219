"""The sandbox network's rules, driven by a hand-moved clock."""

from __future__ import annotations

from typing import Any

import pytest

from shared.sandbox.network import Network, SandboxError, Settings, account_for_tenant


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def net(clock: FakeClock) -> Network:
    return Network(Settings(qr_first_s=60, qr_next_s=20, qr_count=6, removal_delay_s=60), clock)


def messages(net: Network, conn_id: int) -> list[dict[str, Any] | None]:
    """Drain the outbox and keep what went to one connection (None marks a bare close)."""
    return [o.message for o in net.drain() if o.conn_id == conn_id]


def pair(net: Network, tenant: str, phone: str | None = None) -> tuple[str, str]:
    """Pair a device for ``tenant`` and return (jid, keys)."""
    conn = net.open_pairing(tenant)
    assert conn is not None
    code = net.pending()[-1]["code"]
    net.scan(code, phone)
    success = next(m for m in messages(net, conn) if m and m["ev"] == "pair_success")
    return success["jid"], success["keys"]


def test_qr_codes_rotate_on_schedule_then_pairing_times_out(net: Network, clock: FakeClock):
    conn = net.open_pairing("t1")
    assert conn is not None
    first = messages(net, conn)
    assert first == [{"ev": "qr", "code": first[0]["code"], "expires_in": 60, "index": 0}]
    clock.advance(59.9)
    net.advance()
    assert messages(net, conn) == []
    clock.advance(0.1)
    net.advance()
    second = messages(net, conn)
    assert [(m["index"], m["expires_in"]) for m in second] == [(1, 20)]
    assert second[0]["code"] != first[0]["code"]
    for index in range(2, 6):
        clock.advance(20)
        net.advance()
        assert [m["index"] for m in messages(net, conn)] == [index]
    assert net.next_deadline() == pytest.approx(clock.now + 20)
    clock.advance(20)
    net.advance()
    assert messages(net, conn) == [{"ev": "pairing_timeout"}]
    assert net.connection_rows()[0]["end_reason"] == "pairing_timeout"
    assert net.connection_rows()[0]["ended_at"] == clock.now
    assert net.pending() == []


def test_each_pairing_rotates_at_its_own_time_whenever_it_started(net: Network,
                                                                    clock: FakeClock):
    """advance() skips its walk while no timer is due: a pairing opened after a walk
    (the first timer of all, or a later one than the rest) must still rotate on time."""
    net.advance()  # a walk with no timer at all: nothing is due, ever, until one is set
    assert net.next_deadline() is None
    early = net.open_pairing("t1")
    clock.advance(30)
    net.advance()  # a full walk: nothing due until t1's code expires
    late = net.open_pairing("t2")
    assert early is not None and late is not None
    net.drain()
    assert net.next_deadline() == pytest.approx(clock.now + 30)
    clock.advance(30)
    net.advance()
    assert [m["index"] for m in messages(net, early)] == [1]
    assert net.next_deadline() == pytest.approx(clock.now + 20), "t1's next code comes first"
    clock.advance(20)
    net.advance()
    assert [o.conn_id for o in net.drain()] == [early]
    clock.advance(10)
    net.advance()
    assert [m["index"] for m in messages(net, late)] == [1]


def test_expired_code_cannot_be_scanned(net: Network, clock: FakeClock):
    net.open_pairing("t1")
    old = net.pending()[0]["code"]
    clock.advance(60)
    with pytest.raises(SandboxError):
        net.scan(old)
    net.scan(net.pending()[0]["code"])


def test_scan_creates_a_device_and_forces_a_515_reconnect(net: Network):
    conn = net.open_pairing("t1")
    assert conn is not None
    net.drain()
    result = net.scan(net.pending()[0]["code"])
    account = account_for_tenant("t1")
    assert result == {"jid": f"{account}:1@s.whatsapp.net", "tenant": "t1"}
    sent = [o for o in net.drain() if o.conn_id == conn]
    assert [o.message["ev"] for o in sent if o.message] == ["pair_success", "stream_error"]
    assert sent[-1].message == {"ev": "stream_error", "code": 515} and sent[-1].close
    assert net.connection_rows()[0]["end_reason"] == "pair_515"
    keys = sent[0].message["keys"]
    resumed = net.open_resume("t1", result["jid"], keys)
    assert resumed is not None
    assert messages(net, resumed) == [{"ev": "connected", "jid": result["jid"]}]
    assert net.conflicts == []


def test_device_numbers_increase_per_account(net: Network):
    first, _ = pair(net, "t1")
    second, _ = pair(net, "t1")
    other, _ = pair(net, "t2", phone="4915100000")
    assert first.endswith(":1@s.whatsapp.net") and second.endswith(":2@s.whatsapp.net")
    assert other == "4915100000:1@s.whatsapp.net"


def test_unknown_device_or_wrong_keys_are_rejected(net: Network):
    jid, keys = pair(net, "t1")
    for bad_jid, bad_keys in [("999:1@s.whatsapp.net", keys), (jid, "wrong")]:
        conn = net.open_resume("t1", bad_jid, bad_keys)
        assert conn is not None
        assert messages(net, conn) == [{"ev": "logged_out", "reason": 401, "on_connect": True}]
        assert net.connections[conn].end_reason == "rejected"


def test_same_device_twice_replaces_the_older_stream(net: Network):
    jid, keys = pair(net, "t1")
    older = net.open_resume("t1", jid, keys)
    newer = net.open_resume("t1", jid, keys)
    assert older is not None and newer is not None
    out = net.drain()
    assert [o.message for o in out if o.conn_id == older][-1] == {"ev": "stream_replaced"}
    assert net.connections[older].end_reason == "stream_replaced"
    assert net.connections[newer].live
    [conflict] = net.conflicts
    assert conflict["kind"] == "same_device" and conflict["connections"] == [older, newer]


def test_same_account_overlap_removes_newest_device_after_the_delay(net, clock):
    old_jid, old_keys = pair(net, "t1")
    clock.advance(5)
    new_jid, new_keys = pair(net, "t1")
    old_conn = net.open_resume("t1", old_jid, old_keys)
    clock.advance(1)
    new_conn = net.open_resume("t1", new_jid, new_keys)
    net.drain()
    [conflict] = [c for c in net.conflicts if c["kind"] == "same_account"]
    assert conflict["devices"] == sorted([old_jid, new_jid])
    assert conflict["connections"] == [old_conn, new_conn]
    clock.advance(59.9)
    net.advance()
    assert net.drain() == [] and new_jid in net.devices
    clock.advance(0.1)
    net.advance()
    out = net.drain()
    assert [(o.conn_id, o.message, o.close) for o in out] == [
        (new_conn, {"ev": "logged_out", "reason": 401, "on_connect": False,
                    "detail": "device_removed"}, True)
    ]
    assert new_jid not in net.devices and old_jid in net.devices
    assert net.connections[new_conn].end_reason == "device_removed"
    assert net.connections[old_conn].live


def test_removal_happens_even_if_the_overlap_ended_first(net, clock):
    old_jid, old_keys = pair(net, "t1")
    new_jid, new_keys = pair(net, "t1")
    old_conn = net.open_resume("t1", old_jid, old_keys)
    net.open_resume("t1", new_jid, new_keys)
    assert old_conn is not None
    net.client_closed(old_conn)
    clock.advance(60)
    net.advance()
    assert new_jid not in net.devices


def test_pairing_next_to_a_live_connection_is_an_overlap(net: Network):
    jid, keys = pair(net, "t1")
    live = net.open_resume("t1", jid, keys)
    pairing = net.open_pairing("t1")
    net.open_pairing("t2")  # other tenants never count
    [conflict] = net.conflicts
    assert conflict["kind"] == "pairing_overlap"
    assert conflict["tenant"] == "t1" and conflict["connections"] == [live, pairing]


def test_phone_unlink_logs_the_device_out(net: Network):
    jid, keys = pair(net, "t1")
    conn = net.open_resume("t1", jid, keys)
    assert conn is not None
    net.drain()
    net.unlink(jid)
    assert messages(net, conn) == [
        {"ev": "logged_out", "reason": 401, "on_connect": False, "detail": "unlinked"}
    ]
    assert net.connections[conn].end_reason == "unlinked"
    with pytest.raises(SandboxError):
        net.unlink(jid)
    again = net.open_resume("t1", jid, keys)
    assert again is not None and net.connections[again].end_reason == "rejected"


def test_ban_closes_and_refuses_resumes_until_it_expires(net, clock):
    jid, keys = pair(net, "t1")
    conn = net.open_resume("t1", jid, keys)
    assert conn is not None
    net.drain()
    net.ban(jid, 402, 30)
    assert messages(net, conn) == [{"ev": "temporary_ban", "code": 402, "expire_s": 30}]
    clock.advance(10)
    refused = net.open_resume("t1", jid, keys)
    assert refused is not None
    assert messages(net, refused) == [{"ev": "temporary_ban", "code": 402, "expire_s": 20}]
    clock.advance(20)
    back = net.open_resume("t1", jid, keys)
    assert back is not None and messages(net, back) == [{"ev": "connected", "jid": jid}]


def test_outage_drops_everything_and_refuses_new_connections(net: Network):
    jid, keys = pair(net, "t1")
    conn = net.open_resume("t1", jid, keys)
    net.drain()
    net.configure(outage=True)
    assert [(o.conn_id, o.message, o.close) for o in net.drain()] == [(conn, None, True)]
    assert net.open_resume("t1", jid, keys) is None and net.open_pairing("t2") is None
    net.configure(outage=False)
    assert net.open_resume("t1", jid, keys) is not None


@pytest.mark.parametrize("changes", [{"qr_count": 0}, {"qr_first_s": -1}, {"outage": "yes"},
                                     {"latency_s": True}, {"nope": 1}, {"qr_count": 1.5}])
def test_bad_settings_are_refused_and_change_nothing(net: Network, changes):
    before = Settings(**vars(net.settings))
    with pytest.raises(ValueError):
        net.configure(**changes)
    assert net.settings == before


def test_snapshot_survives_a_restart(net: Network, clock: FakeClock):
    jid, keys = pair(net, "t1")
    net.open_resume("t1", jid, keys)
    clock.advance(3)
    fresh = Network(clock=clock)
    fresh.restore(net.snapshot())
    assert fresh.connection_rows()[-1]["end_reason"] == "server_restart"
    conn = fresh.open_resume("t1", jid, keys)
    assert conn is not None and conn == len(net.connections) + 1
    assert messages(fresh, conn) == [{"ev": "connected", "jid": jid}]


def test_a_pair_code_links_the_phone_that_asked_for_it(net: Network):
    conn = net.open_pairing("t1")
    assert conn is not None
    messages(net, conn)
    with pytest.raises(ValueError):
        net.request_pair_code(conn, "+62812")
    code = net.request_pair_code(conn, "6281234567890")
    assert len(code) == 9 and code[4] == "-" and messages(net, conn) == [
        {"ev": "pair_code", "code": code}]
    with pytest.raises(SandboxError):
        net.enter_code("AAAA-AAAA")
    with pytest.raises(SandboxError):
        net.enter_code(code, phone="6289999999999")
    linked = net.enter_code(code.lower().replace("-", ""), phone="6281234567890")
    assert linked["jid"].startswith("6281234567890:") and linked["tenant"] == "t1"
    assert [m["ev"] for m in messages(net, conn) if m] == ["pair_success", "stream_error"]
    with pytest.raises(SandboxError):
        net.enter_code(code), "a code links once"
