"""Errors gunicorn answers itself (before Flask) are JSON too, and 405 carries Allow."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from tests.support.services import Api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[Api]:
    server = Api("api-errors", {"REDIS_URL": redis_url}, workers=1).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _raw(api: Api, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_server_layer_errors_are_json(api: Api) -> None:
    for response, status in (
        (requests.get(f"{api.url}/api/whatsapp/status", timeout=5,
                      headers={"X-Tenant-ID": "a" * 10240, "Authorization": "Bearer x"}), 431),
        (requests.get(f"{api.url}/{'a' * 9000}", timeout=5), 414),
    ):
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"error"} and response.json()["error"]["code"]
    raw = _raw(api, b"GARBAGE\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"Content-Type: application/json" in head
    assert b"<html" not in raw and body.startswith(b'{"error": {"code": "bad_request"')


def test_405_over_gunicorn_carries_allow(api: Api) -> None:
    response = requests.request("TRACE", f"{api.url}/pair", timeout=5)
    assert response.status_code == 405 and response.headers["Content-Type"] == "application/json"
    assert "GET" in response.headers["Allow"]
