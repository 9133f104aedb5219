"""The QR code in every form: JSON text, PNG and SVG (segno), chosen by ?format= or Accept."""

from __future__ import annotations

import io
from typing import Any

import segno
from flask import Request, Response, jsonify
from werkzeug.exceptions import NotAcceptable

from shared.errors import InvalidInput

FORMATS = {"json": "application/json", "png": "image/png", "svg": "image/svg+xml"}
_BY_MIMETYPE = {mimetype: name for name, mimetype in FORMATS.items()}
# Large enough to scan from a screen; a WhatsApp pairing code is version ~10.
PNG_SCALE = 8
SVG_SCALE = 4
QUIET_ZONE = 4


def qr_form(request: Request) -> str:
    """``json``, ``png`` or ``svg``: ``?format=`` wins, then ``Accept`` (JSON if anything goes)."""
    asked = request.args.get("format")
    if asked is not None:
        if asked not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
        return asked
    if not request.accept_mimetypes:
        return "json"
    best = request.accept_mimetypes.best_match(list(FORMATS.values()))
    if best is None:
        raise NotAcceptable(f"the QR code is served as {', '.join(FORMATS.values())}")
    return _BY_MIMETYPE[best]


def qr_response(code: dict[str, Any], form: str) -> Response:
    """``code`` ({code, expires_at, index}) as ``form``, never cached, expiry in headers."""
    if form == "json":
        response = jsonify(code)
    else:
        image = segno.make(code["code"], error="m", micro=False)
        buffer = io.BytesIO()
        if form == "png":
            image.save(buffer, kind="png", scale=PNG_SCALE, border=QUIET_ZONE)
        else:
            image.save(buffer, kind="svg", scale=SVG_SCALE, border=QUIET_ZONE, xmldecl=False,
                       title="WhatsApp pairing QR code")
        response = Response(buffer.getvalue(), mimetype=FORMATS[form])
    response.headers["X-QR-Expires-At"] = f"{float(code['expires_at']):.3f}"
    response.headers["X-QR-Index"] = str(int(code["index"]))
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Accept")
    return response
