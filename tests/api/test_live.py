"""Live endpoints: SSE events and history, phone pairing input, pair code, webhook config."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import services_of
from shared import keys
from shared.events import EventLog
from shared.state import SessionStore
from tests.api.conftest import ADMIN, auth
from tests.api.test_whatsapp import assert_error, snapshot

Tenant = tuple[str, str]


@pytest.fixture
def live_app(redis_url: str) -> Iterator[Flask]:
    """An app whose streams end quickly, so a test can read one whole."""
    flask_app = create_app({"redis_url": redis_url, "admin_token": ADMIN,
                            "events_stream_max_s": 0.6, "events_heartbeat_s": 0.2})
    yield flask_app
    services_of(flask_app).close()


def sse_messages(body: str) -> list[dict[str, str]]:
    """Parse a text/event-stream body into its messages (comments dropped)."""
    messages = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if line and not line.startswith(":") and ": " in line)
        if "data" in fields:
            messages.append(fields)
    return messages


def test_sse_resumes_after_last_event_id_and_ends_after_its_max_duration(
    live_app: Flask, tenant: Tenant, redis_client: redis.Redis
) -> None:
    client = live_app.test_client()
    store = SessionStore(redis_client)
    store.begin_pairing(tenant[0], "qr", 60)  # events: pairing, state
    first = EventLog(redis_client).history(tenant[0], 2)[0]
    response = client.get("/api/whatsapp/events",
                          headers={**auth(tenant), "Last-Event-ID": first.id})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert body.startswith("retry: ") and ": heartbeat" in body and "reconnect" in body
    messages = sse_messages(body)
    assert [(m["event"], json.loads(m["data"])["kind"]) for m in messages] == [("state", "state")]
    state = json.loads(messages[0]["data"])
    assert messages[0]["id"] == state["id"] and state["data"]["state"] == "pairing"


def test_sse_without_last_event_id_starts_with_the_next_event(
    live_app: Flask, tenant: Tenant, redis_client: redis.Redis
) -> None:
    store = SessionStore(redis_client)
    store.begin_pairing(tenant[0], "qr", 60)
    response = live_app.test_client().get("/api/whatsapp/events", headers=auth(tenant),
                                          buffered=False)
    store.enqueue(tenant[0], "reset")
    redis_client.set(keys.fence(tenant[0]), 1)
    store.fenced_write(tenant[0], 1, session={"state": "idle"})
    messages = sse_messages(response.get_data(as_text=True))
    assert [json.loads(m["data"])["data"]["state"] for m in messages] == ["idle"]


def test_bad_last_event_id_and_missing_credentials(client: FlaskClient, tenant: Tenant) -> None:
    bad = client.get("/api/whatsapp/events", headers={**auth(tenant), "Last-Event-ID": "$"})
    assert_error(bad, 422, "invalid_input")
    for path in ("/api/whatsapp/events", "/api/whatsapp/history", "/api/whatsapp/pair-code",
                 "/api/whatsapp/webhook"):
        assert_error(client.get(path, headers={"X-Tenant-ID": tenant[0]}), 401)
        assert_error(client.get(path, headers={"X-Tenant-ID": tenant[0],
                                               "Authorization": "Bearer wak_wrong"}), 401)


def test_history_returns_the_last_n_oldest_first(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    SessionStore(redis_client).begin_pairing(tenant[0], "qr", 60)
    events = client.get("/api/whatsapp/history?limit=1", headers=auth(tenant)).get_json()
    assert [e["kind"] for e in events["events"]] == ["state"]
    events = client.get("/api/whatsapp/history", headers=auth(tenant)).get_json()["events"]
    assert [e["kind"] for e in events] == ["pairing", "state"]
    assert set(events[0]) == {"id", "kind", "at", "data"}
    for limit in ("0", "1001", "x", "-1", "²", "1e3", " 5"):
        assert_error(client.get(f"/api/whatsapp/history?limit={limit}", headers=auth(tenant)),
                     422)


BAD_PHONES = [
    ({"method": "phone"}, "phone is required"),
    ({"method": "phone", "phone": "6281234567890"}, "E.164"),
    ({"method": "phone", "phone": "+62 12"}, "E.164"),
    ({"method": "phone", "phone": "+62 812 3456 7890"}, "no spaces"),
    ({"method": "qr", "phone": None}, "only for method phone"),
    ({"method": "phone", "phone": "+62abc"}, "phone"),
    ({"method": "phone", "phone": 6281234567890}, "phone"),
    ({"method": "qr", "phone": "+6281234567890"}, "only for method phone"),
]


@pytest.mark.parametrize(("body", "message"), BAD_PHONES)
def test_bad_phone_numbers_are_clear_422s_and_change_nothing(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis, body: dict, message: str
) -> None:
    before = snapshot(redis_client, tenant[0])
    response = client.post("/api/whatsapp/pair", headers=auth(tenant), json=body)
    assert_error(response, 422, "invalid_input")
    assert message in response.get_json()["error"]["message"]
    assert snapshot(redis_client, tenant[0]) == before


def test_phone_pairing_keeps_the_number_in_the_mailbox_only(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    response = client.post("/api/whatsapp/pair", headers=auth(tenant),
                           json={"method": "phone", "phone": "+6281234567890"})
    assert response.status_code == 202
    assert response.get_json()["pair_code_url"] == "/api/whatsapp/pair-code"
    command = json.loads(redis_client.lindex(keys.mailbox(tenant[0]), 0))
    assert command["method"] == "phone" and command["phone"] == "+6281234567890"
    for key in (keys.session(tenant[0]), keys.pairing(tenant[0])):
        assert b"81234567890" not in b"".join(redis_client.hvals(key))
    assert b"81234567890" not in json.dumps(
        [e.to_dict() for e in EventLog(redis_client).history(tenant[0], 10)]).encode()
    status = client.get("/api/whatsapp/status", headers=auth(tenant)).get_json()
    assert status["pairing"]["method"] == "phone" and status["pairing"]["phone"] == "+62*******7890"
    assert_error(client.get("/api/whatsapp/pair-code", headers=auth(tenant)), 404, "not_found")
    redis_client.set(keys.pair_code(tenant[0]), json.dumps({"code": "ABCD-EFGH",
                                                            "expires_at": 5.0}))
    code = client.get("/api/whatsapp/pair-code", headers=auth(tenant)).get_json()
    assert code == {"code": "ABCD-EFGH", "expires_at": 5.0}


def queued_tasks(client: redis.Redis) -> list[dict]:
    """The Celery messages waiting on the claims queue, decoded."""
    found = []
    for raw in client.lrange("wapair.claims", 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append({"task": message["headers"]["task"], "args": args, "raw": raw})
    return found


def test_webhook_secret_is_shown_once_and_deliveries_carry_ids_only(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    assert_error(client.get("/api/whatsapp/webhook", headers=auth(tenant)), 404)
    for bad in ({"url": "ftp://x.example"}, {"url": "https://user:pw@x.example/"},
                {"url": "https://x.example/", "events": ["nope"]}, {"url": "https://x/ a"},
                {"url": "https://x.example/", "extra": 1}, {}, {"url": "http://[::1"},
                {"url": "http://x.example:99999/"}, {"url": "https://x.example/", "events": []}):
        assert_error(client.put("/api/whatsapp/webhook", headers=auth(tenant), json=bad), 422)
    created = client.put("/api/whatsapp/webhook", headers=auth(tenant),
                         json={"url": "http://hooks.example.com:9/hook", "events": ["state"]})
    assert created.status_code == 200
    secret = created.get_json()["secret"]
    assert secret.startswith("whsec_") and created.get_json()["events"] == ["state"]
    shown = client.get("/api/whatsapp/webhook", headers=auth(tenant))
    assert secret not in shown.get_data(as_text=True)
    assert shown.get_json()["delivery"]["attempts"] == 0
    redis_client.delete("wapair.claims")
    assert client.post("/api/whatsapp/pair", headers=auth(tenant)).status_code == 202
    state_event = EventLog(redis_client).history(tenant[0], 1)[0]
    hooks = [t for t in queued_tasks(redis_client) if t["task"] == "wapair.webhook"]
    assert [t["args"] for t in hooks] == [[tenant[0], state_event.id]]
    assert secret.encode() not in hooks[0]["raw"] and b"hooks.example.com" not in hooks[0]["raw"]
    assert client.delete("/api/whatsapp/webhook", headers=auth(tenant)).status_code == 204
    assert_error(client.delete("/api/whatsapp/webhook", headers=auth(tenant)), 404)


def test_another_tenants_key_reaches_no_events_code_or_webhook(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis
) -> None:
    from shared.tenants import TenantRegistry

    other = f"{tenant[0]}-b"
    TenantRegistry(redis_client).create(other)
    SessionStore(redis_client).begin_pairing(other, "qr", 60)
    redis_client.set(keys.pair_code(other), json.dumps({"code": "ABCD-EFGH", "expires_at": 1}))
    headers = {"X-Tenant-ID": other, "Authorization": f"Bearer {tenant[1]}"}
    for method, path in (("GET", "/api/whatsapp/events"), ("GET", "/api/whatsapp/history"),
                         ("GET", "/api/whatsapp/pair-code"), ("GET", "/api/whatsapp/webhook"),
                         ("PUT", "/api/whatsapp/webhook"), ("DELETE", "/api/whatsapp/webhook")):
        response = client.open(path, method=method, headers=headers,
                               json={"url": "http://127.0.0.1:9/"} if method == "PUT" else None)
        assert response.status_code in (401, 403), (method, path)
        assert "ABCD" not in response.get_data(as_text=True)
    assert not redis_client.exists(keys.webhook(other))


def test_the_page_and_its_assets_are_served_with_a_strict_policy(client: FlaskClient) -> None:
    page = client.get("/pair")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe" not in policy and page.headers["Referrer-Policy"] == "no-referrer"
    body = page.get_data(as_text=True)
    assert "/pair/static/pair.js" in body and "<form" not in body, "nothing can submit the key"
    script = client.get("/pair/static/pair.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert "Authorization" in script.get_data(as_text=True)
    assert client.get("/pair/static/pair.css").mimetype == "text/css"
    for name in ("nope.js", "..%2Fpage.py", "pair.html"):
        assert_error(client.get(f"/pair/static/{name}"), 404)


def test_streams_per_process_are_capped_and_a_closed_one_frees_its_place(
    redis_url: str, tenant: Tenant
) -> None:
    app = create_app({"redis_url": redis_url, "events_max_streams": 1,
                      "events_stream_max_s": 30, "events_heartbeat_s": 0.1})
    client = app.test_client()
    first = client.get("/api/whatsapp/events", headers=auth(tenant), buffered=False)
    assert first.status_code == 200
    busy = client.get("/api/whatsapp/events", headers=auth(tenant), buffered=False)
    assert_error(busy, 503, "too_many_streams")
    assert int(busy.headers["Retry-After"]) > 0
    first.close()  # what the server does when the client goes away, read or not
    again = client.get("/api/whatsapp/events", headers=auth(tenant), buffered=False)
    assert again.status_code == 200
    again.close()
    services_of(app).close()


def test_a_webhook_to_a_non_public_address_is_refused_and_nothing_is_stored(
    client: FlaskClient, tenant: Tenant, redis_client: redis.Redis, redis_url: str
) -> None:
    # Names that resolve (here, by the tests' table) to loopback or private addresses.
    for url in ("http://localhost:5555/", "https://internal.example.com/hook"):
        response = client.put("/api/whatsapp/webhook", headers=auth(tenant), json={"url": url})
        assert_error(response, 422, "destination_refused")
    # Addresses as hosts, in any spelling: refused before anything is resolved.
    for url in ("http://127.0.0.1:6379/", "http://[::1]/", "http://169.254.169.254/latest/",
                "http://10.0.0.8/hook", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:8000/",
                "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.1/", "http://[fd00::1]/",
                "http://[fe80::1]/"):
        response = client.put("/api/whatsapp/webhook", headers=auth(tenant), json={"url": url})
        assert_error(response, 422, "invalid_input")
    assert not redis_client.exists(keys.webhook(tenant[0]))
    local = create_app({"redis_url": redis_url, "webhook_allow_private": "1"})
    try:
        created = local.test_client().put("/api/whatsapp/webhook", headers=auth(tenant),
                                          json={"url": "http://localhost:9/hook"})
        assert created.status_code == 200, "WEBHOOK_ALLOW_PRIVATE=1 lets local receivers in"
    finally:
        services_of(local).close()
