"""Event streams over real gunicorn: handed to the stream hub, no thread held, same contract."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from shared import keys
from shared.events import EventLog
from shared.state import SessionStore
from shared.tenants import TenantRegistry
from tests.api.test_live import sse_messages
from tests.support.services import Api

EVENTS = "/api/whatsapp/events"


@pytest.fixture(scope="module")
def hub_api(redis_url: str) -> Iterator[Api]:
    """One gunicorn process with 2 threads: more streams than threads must still work."""
    api = Api("hub", {"REDIS_URL": redis_url, "EVENTS_HEARTBEAT_S": "0.3",
                      "EVENTS_STREAM_MAX_S": "2", "EVENTS_MAX_STREAMS": "12"}, workers=1)
    api.argv[api.argv.index("--threads") + 1] = "2"
    api.start().wait_ready()
    yield api
    api.stop()


def _tenant(client: redis.Redis, tenant_id: str) -> dict[str, str]:
    key = TenantRegistry(client).create(tenant_id)
    return {"X-Tenant-ID": tenant_id, "Authorization": f"Bearer {key}"}


def _change(client: redis.Redis, tenant: str, state: str) -> None:
    fence = int(client.incr(keys.fence(tenant)))
    SessionStore(client).fenced_write(tenant, fence, session={"state": state})


class Reader:
    """Reads a stream to its end on a thread."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.body = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for chunk in self.response.iter_content(None):
            self.body += chunk

    def text(self, timeout: float = 10) -> str:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.body.decode()


def test_more_streams_than_threads_each_get_every_change_and_status_still_answers(
    hub_api: Api, redis_client: redis.Redis, tenant_id: str
) -> None:
    headers = _tenant(redis_client, tenant_id)
    streams = [requests.get(hub_api.url + EVENTS, headers=headers, stream=True, timeout=10)
               for _ in range(8)]
    assert [s.status_code for s in streams] == [200] * 8
    assert streams[0].headers["Content-Type"].startswith("text/event-stream")
    started = time.monotonic()
    status = requests.get(hub_api.url + "/api/whatsapp/status", headers=headers, timeout=5)
    assert status.status_code == 200 and time.monotonic() - started < 1
    readers = [Reader(s) for s in streams]
    _change(redis_client, tenant_id, "connected")
    _change(redis_client, tenant_id, "reconnecting")
    for reader in readers:
        body = reader.text()
        assert body.startswith("retry: ") and ": heartbeat" in body
        assert body.rstrip().endswith("reconnect with Last-Event-ID")
        states = [json.loads(m["data"])["data"]["state"] for m in sse_messages(body)]
        assert states == ["connected", "reconnecting"]


def test_resume_after_last_event_id_behind_a_stream_already_open(
    hub_api: Api, redis_client: redis.Redis, tenant_id: str
) -> None:
    headers = _tenant(redis_client, tenant_id)
    first = Reader(requests.get(hub_api.url + EVENTS, headers=headers, stream=True, timeout=10))
    time.sleep(0.1)  # the hub now reads this tenant (the second stream must catch up)
    _change(redis_client, tenant_id, "connected")
    _change(redis_client, tenant_id, "reconnecting")
    oldest = EventLog(redis_client).history(tenant_id, 2)[0]
    resumed = Reader(requests.get(hub_api.url + EVENTS, timeout=10, stream=True,
                                  headers={**headers, "Last-Event-ID": oldest.id}))
    _change(redis_client, tenant_id, "connected")
    states = [json.loads(m["data"])["data"]["state"] for m in sse_messages(resumed.text())]
    assert states == ["reconnecting", "connected"]
    ids = [m["id"] for m in sse_messages(first.text())]
    assert len(ids) == 3 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_another_tenants_key_and_events_stay_out(
    hub_api: Api, redis_client: redis.Redis, tenant_id: str
) -> None:
    mine = _tenant(redis_client, tenant_id)
    theirs = _tenant(redis_client, f"{tenant_id}-b")
    wrong = {"X-Tenant-ID": f"{tenant_id}-b", "Authorization": mine["Authorization"]}
    refused = requests.get(hub_api.url + EVENTS, headers=wrong, timeout=5)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert requests.get(hub_api.url + EVENTS, timeout=5,
                        headers={**mine, "Last-Event-ID": "$"}).status_code == 422
    reader = Reader(requests.get(hub_api.url + EVENTS, headers=mine, stream=True, timeout=10))
    other = Reader(requests.get(hub_api.url + EVENTS, headers=theirs, stream=True, timeout=10))
    time.sleep(0.1)
    _change(redis_client, f"{tenant_id}-b", "connected")
    assert sse_messages(reader.text()) == []
    assert len(sse_messages(other.text())) == 1


def test_streams_are_capped_per_process_and_a_closed_one_frees_its_place(
    hub_api: Api, redis_client: redis.Redis, tenant_id: str
) -> None:
    headers = _tenant(redis_client, tenant_id)
    held = [requests.get(hub_api.url + EVENTS, headers=headers, stream=True, timeout=10)
            for _ in range(12)]
    assert all(s.status_code == 200 for s in held)
    busy = requests.get(hub_api.url + EVENTS, headers=headers, timeout=5)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "too_many_streams"
    assert int(busy.headers["Retry-After"]) > 0
    held.pop().close()

    def admitted() -> bool:
        again = requests.get(hub_api.url + EVENTS, headers=headers, stream=True, timeout=5)
        again.close()
        return again.status_code == 200

    deadline = time.monotonic() + 5
    while not admitted():
        assert time.monotonic() < deadline, "a closed stream never gave its place back"
        time.sleep(0.05)
    for s in held:
        s.close()
