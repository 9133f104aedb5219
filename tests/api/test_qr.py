"""GET /api/whatsapp/qr as JSON, PNG and SVG: chosen by ?format= or Accept, never cached."""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET

import pytest
import redis
import segno
from flask.testing import FlaskClient
from PIL import Image

from api.qr import PNG_SCALE, QUIET_ZONE
from shared import keys
from tests.api.conftest import auth
from tests.api.test_whatsapp import assert_error

Tenant = tuple[str, str]
# The shape of a real WhatsApp pairing ref: ref,noise key,identity key,adv secret.
CODE = ("2@Xk3iP0qXb8Zr5lqU7hR3y5b7fXzCqkqf5ZJb0p6b0l2lY1wX0k3Y8sR5d9tQ2mK4,"
        "aGVsbG8gd29ybGQgbm9pc2Uga2V5IGJhc2U2NA==,aWRlbnRpdHkga2V5IGJhc2U2NA==,"
        "YWR2IHNlY3JldCBiYXNlNjQ=")


@pytest.fixture
def shown(redis_client: redis.Redis, tenant: Tenant) -> dict[str, object]:
    """A QR code as the tenant's owner writes it."""
    code = {"code": CODE, "index": 2, "expires_at": round(time.time() + 20, 3)}
    redis_client.set(keys.qr(tenant[0]), json.dumps(code), px=20_000)
    return code


def _assert_qr_headers(response, code: dict[str, object]) -> None:  # noqa: ANN001
    assert response.headers["Cache-Control"] == "no-store"
    assert float(response.headers["X-QR-Expires-At"]) == pytest.approx(code["expires_at"])
    assert response.headers["X-QR-Index"] == str(code["index"])


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html, */*;q=0.1"])
def test_json_by_default(client: FlaskClient, tenant: Tenant, shown: dict, accept) -> None:  # noqa: ANN001
    headers = {**auth(tenant), **({"Accept": accept} if accept else {})}
    response = client.get("/api/whatsapp/qr", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == shown
    _assert_qr_headers(response, shown)


def test_png_encodes_the_code(client: FlaskClient, tenant: Tenant, shown: dict) -> None:
    by_accept = client.get("/api/whatsapp/qr", headers={**auth(tenant), "Accept": "image/png"})
    by_query = client.get("/api/whatsapp/qr?format=png",
                          headers={**auth(tenant), "Accept": "application/json"})
    for response in (by_accept, by_query):
        assert response.status_code == 200 and response.mimetype == "image/png"
        _assert_qr_headers(response, shown)
    # Read the modules back from the pixels: they are the matrix of the code itself.
    image = Image.open(io.BytesIO(by_query.data)).convert("1")
    expected = segno.make(CODE, error="m", micro=False).matrix
    size = len(expected)
    assert image.size == ((size + 2 * QUIET_ZONE) * PNG_SCALE,) * 2
    read = [[image.getpixel(((QUIET_ZONE + x) * PNG_SCALE + PNG_SCALE // 2,
                             (QUIET_ZONE + y) * PNG_SCALE + PNG_SCALE // 2)) == 0
             for x in range(size)] for y in range(size)]
    assert read == [[bool(m) for m in row] for row in expected]


def test_svg_is_an_svg_document(client: FlaskClient, tenant: Tenant, shown: dict) -> None:
    response = client.get("/api/whatsapp/qr", headers={**auth(tenant), "Accept": "image/svg+xml"})
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    _assert_qr_headers(response, shown)
    root = ET.fromstring(response.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert b"<script" not in response.data


def test_bad_format_and_unservable_accept(client: FlaskClient, tenant: Tenant,
                                          shown: dict) -> None:
    assert_error(client.get("/api/whatsapp/qr?format=gif", headers=auth(tenant)), 422,
                 "invalid_input")
    assert_error(client.get("/api/whatsapp/qr", headers={**auth(tenant), "Accept": "text/html"}),
                 406, "not_acceptable")


@pytest.mark.parametrize("form", ["json", "png", "svg"])
def test_no_code_is_404_and_no_credentials_401_in_every_form(
    client: FlaskClient, tenant: Tenant, form: str
) -> None:
    assert_error(client.get(f"/api/whatsapp/qr?format={form}", headers=auth(tenant)), 404)
    response = client.get(f"/api/whatsapp/qr?format={form}",
                          headers={"X-Tenant-ID": tenant[0]})
    assert_error(response, 401)
