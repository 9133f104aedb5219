"""Pairing by phone code in the owner: asked for after the first QR, stored, streamed."""

from __future__ import annotations

import json

import redis

from shared import keys
from shared.clock import ManualClock
from shared.events import EventLog
from shared.state import SessionStore
from shared.whatsapp.port import EventKind
from tests.support.ports import wait_for
from tests.workers.scripted_backend import ScriptedBackend
from tests.workers.test_session_host import (  # noqa: F401 - fixtures
    TIMEOUT_S,
    backend,
    clock,
    host,
    kicks,
    status,
)
from workers.session_host import SessionHost


def test_phone_pairing_asks_for_the_code_once_after_the_first_qr(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend,  # noqa: F811
    clock: ManualClock, tenant_id: str,  # noqa: F811
) -> None:
    SessionStore(booted_redis, clock).begin_pairing(tenant_id, "phone", TIMEOUT_S,
                                                    "+6281234567890")
    host.kick(tenant_id)
    session = wait_for(lambda: backend.live(tenant_id), 5, "a pairing session")[0]
    assert session.pair_code_requests == [], "whatsmeow refuses PairPhone before the first QR"
    session.emit(EventKind.QR, code="2@first", expires_in=60, index=0)
    session.emit(EventKind.QR, code="2@second", expires_in=20, index=1)
    assert session.pair_code_requests == ["6281234567890"]
    session.emit(EventKind.PAIR_CODE, code="ABCD-EFGH")
    code = json.loads(booted_redis.get(keys.pair_code(tenant_id)))
    assert code == {"code": "ABCD-EFGH", "expires_at": clock.time() + TIMEOUT_S}
    assert 0 < booted_redis.pttl(keys.pair_code(tenant_id)) <= TIMEOUT_S * 1000
    assert status(booted_redis, tenant_id)["pairing"]["phone"] == "+62*******7890"
    session.emit(EventKind.PAIR_SUCCESS, jid="6281234567890:3@s.whatsapp.net")
    assert booted_redis.get(keys.pair_code(tenant_id)) is None, "gone once used"
    session.emit(EventKind.CONNECTED, jid="6281234567890:3@s.whatsapp.net")
    events = EventLog(booted_redis).history(tenant_id, 100)
    assert [e.kind for e in events if e.kind in ("qr", "pair_code")] == ["qr", "qr", "pair_code"]
    assert events[-1].kind == "state" and events[-1].data["state"] == "connected"
    assert "6281234567890" not in json.dumps(
        [e.to_dict() for e in events if e.kind != "state"]), "no full number outside the JID"


def test_a_refused_pair_code_ends_the_pairing_failed(
    host: SessionHost, booted_redis: redis.Redis, backend: ScriptedBackend,  # noqa: F811
    clock: ManualClock, tenant_id: str,  # noqa: F811
) -> None:
    SessionStore(booted_redis, clock).begin_pairing(tenant_id, "phone", TIMEOUT_S, "+14155550123")
    host.kick(tenant_id)
    session = wait_for(lambda: backend.live(tenant_id), 5, "a pairing session")[0]
    session.emit(EventKind.QR, code="2@first", expires_in=60, index=0)
    session.emit(EventKind.CONNECT_FAILURE, reason="pair_code", message="rate limited")
    st = status(booted_redis, tenant_id)
    assert st["state"] == "failed" and st["last_error"]["code"] == "pair_code_failed"
    assert st["pairing"]["status"] == "failed" and session.closed.is_set()
