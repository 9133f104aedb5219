"""POST/GET /api/whatsapp/messages: acceptance, idempotency, and every refusal (4xx, no change)."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from flask.testing import FlaskClient

from api.services import services_of
from shared import keys
from shared.state import Command
from tests.api.conftest import auth
from tests.api.test_whatsapp import assert_error

Tenant = tuple[str, str]
TO = "+6281234567890"


def connect(client: redis.Redis, tenant: str, state: str = "connected") -> None:
    client.hset(keys.session(tenant), mapping={"state": state, "device": "1:2@s.whatsapp.net"})


def snapshot(client: redis.Redis, tenant: str) -> dict[str, object]:
    return {
        "mailbox": client.lrange(keys.mailbox(tenant), 0, -1),
        "outbox": client.zrange(keys.outbox(tenant), 0, -1),
        "index": client.zrange(keys.messages_index(tenant, "out"), 0, -1),
        "messages": sorted(client.scan_iter(f"wa:{{{tenant}}}:msg:*")),
        "events": client.xlen(keys.events(tenant)),
    }


def test_text_is_accepted_recorded_and_queued_by_id_only(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages", headers=auth(tenant),
                           json={"to": TO, "text": "hello there"})
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "queued" and body["id"].startswith("m_")
    assert body["status_url"] == f"/api/whatsapp/messages/{body['id']}"
    [raw] = redis_client.lrange(keys.mailbox(tenant[0]), 0, -1)
    command = Command.from_json(raw)
    assert command.kind == "send" and command.message_id == body["id"]
    assert b"hello there" not in raw  # the text stays in the message record
    shown = client.get(body["status_url"], headers=auth(tenant)).get_json()
    assert shown["status"] == "queued" and shown["to"] == TO and shown["sent_at"] is None
    assert {"id", "to", "status", "wa_message_id", "created_at", "sent_at", "delivered_at",
            "read_at", "error"} <= set(shown)
    [event] = redis_client.xrange(keys.events(tenant[0]))[-1:]
    assert event[1][b"kind"] == b"message_status"
    assert json.loads(event[1][b"data"]) == {"id": body["id"], "status": "queued"}
    listed = client.get("/api/whatsapp/messages?direction=out&limit=5",
                        headers=auth(tenant)).get_json()
    assert [m["id"] for m in listed["messages"]] == [body["id"]]


def test_idempotency_key_same_body_same_message_other_body_409(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0])
    headers = {**auth(tenant), "Idempotency-Key": "order-42"}
    first = client.post("/api/whatsapp/messages", headers=headers, json={"to": TO, "text": "a"})
    again = client.post("/api/whatsapp/messages", headers=headers, json={"to": TO, "text": "a"})
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert redis_client.llen(keys.mailbox(tenant[0])) == 1
    before = snapshot(redis_client, tenant[0])
    other = client.post("/api/whatsapp/messages", headers=headers, json={"to": TO, "text": "b"})
    assert_error(other, 409, "idempotency_conflict")
    assert snapshot(redis_client, tenant[0]) == before


@pytest.mark.parametrize("state", ["idle", "pairing", "failed", "logged_out"])
def test_409_not_connected(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis, state: str
) -> None:
    connect(redis_client, tenant[0], state)
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages", headers=auth(tenant),
                           json={"to": TO, "text": "hi"})
    assert_error(response, 409, "not_connected")
    assert snapshot(redis_client, tenant[0]) == before


def test_reconnecting_tenant_accepts(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0], "reconnecting")
    response = client.post("/api/whatsapp/messages", headers=auth(tenant),
                           json={"to": "628123456789@s.whatsapp.net", "text": "hi"})
    assert response.status_code == 202


@pytest.mark.parametrize("body", [
    {"to": "6281234567890", "text": "no plus"},
    {"to": "+0123", "text": "bad number"},
    {"to": TO, "text": ""},
    {"to": TO, "text": "   "},
    {"to": TO},
    {"text": "no recipient"},
    {"to": TO, "text": "x", "colour": "red"},
    {"to": TO, "text": "x", "image": {"data_base64": "aGVsbG8="}},
    {"to": TO, "image": {"data_base64": "aGVsbG8=", "url": "https://example.com/a.png"}},
    {"to": TO, "image": {}},
    {"to": TO, "image": {"data_base64": "not base64!!"}},
    {"to": TO, "document": {"url": "ftp://example.com/a"}},
    {"to": TO, "text": "x", "retry": "twice"},
    {"to": TO, "text": "x" * 4097},
])
def test_422_for_bad_bodies_changes_nothing(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis, body: dict[str, object]
) -> None:
    connect(redis_client, tenant[0])
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages", headers=auth(tenant), json=body)
    assert_error(response, 422)
    assert snapshot(redis_client, tenant[0]) == before


def test_image_with_data_is_kept_and_served_back(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0])
    data = b"\x89PNG fake image bytes"
    response = client.post("/api/whatsapp/messages", headers=auth(tenant), json={
        "to": TO, "image": {"data_base64": base64.b64encode(data).decode(),
                            "mime_type": "image/png", "caption": "look"}})
    assert response.status_code == 202, response.get_data(as_text=True)
    message_id = response.get_json()["id"]
    media = client.get(f"/api/whatsapp/messages/{message_id}/media", headers=auth(tenant))
    assert media.status_code == 200 and media.data == data
    assert media.mimetype == "image/png" and media.headers["Content-Disposition"] == "attachment"


def test_413_over_the_media_limit(
    app, client: FlaskClient, tenant: Tenant, redis_client: redis.Redis  # noqa: ANN001
) -> None:
    connect(redis_client, tenant[0])
    limit = services_of(app).settings.message_max_media_bytes
    big = base64.b64encode(b"\0" * (limit + 10)).decode()
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages", headers=auth(tenant),
                           json={"to": TO, "document": {"data_base64": big}})
    assert_error(response, 413)
    assert snapshot(redis_client, tenant[0]) == before


def test_429_outbox_full_with_retry_after(
    app, client: FlaskClient, tenant: Tenant, redis_client: redis.Redis  # noqa: ANN001
) -> None:
    connect(redis_client, tenant[0])
    cap = services_of(app).settings.outbox_max
    for i in range(cap):
        redis_client.zadd(keys.outbox(tenant[0]), {f"m_{i}": i})
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages", headers=auth(tenant),
                           json={"to": TO, "text": "one too many"})
    assert_error(response, 429, "outbox_full")
    assert int(response.headers["Retry-After"]) >= 1
    assert snapshot(redis_client, tenant[0]) == before


def test_idempotency_key_too_long_is_422(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0])
    response = client.post("/api/whatsapp/messages",
                           headers={**auth(tenant), "Idempotency-Key": "k" * 101},
                           json={"to": TO, "text": "x"})
    assert_error(response, 422)


def test_another_tenants_message_is_404_and_list_validates(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    connect(redis_client, tenant[0])
    redis_client.hset(keys.message("someone-else", "m_abc"), mapping={"id": "m_abc"})
    assert_error(client.get("/api/whatsapp/messages/m_abc", headers=auth(tenant)), 404)
    assert_error(client.get("/api/whatsapp/messages/x%20y", headers=auth(tenant)), 404)
    assert_error(client.get("/api/whatsapp/messages?direction=sideways", headers=auth(tenant)),
                 422)
    assert_error(client.get("/api/whatsapp/messages?limit=0", headers=auth(tenant)), 422)
    assert_error(client.post("/api/whatsapp/messages", json={"to": TO, "text": "x"}), 401)
