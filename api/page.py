"""The pairing page at ``/pair``: small, server-rendered, no front-end build.

The tenant types its id and key into the page; the key stays in the page's
memory and travels only in ``Authorization`` headers of ``fetch()`` calls, never
in a URL (EventSource cannot send headers, so the event stream is read with a
streaming ``fetch()`` that resumes with ``Last-Event-ID``). The script and the
style are static files, so the Content-Security-Policy allows no inline code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Blueprint, Response, render_template

from shared.errors import NotFound

page = Blueprint("page", __name__, template_folder="templates")
STATIC = Path(__file__).parent / "static"
ASSETS = {"pair.js": "text/javascript", "pair.css": "text/css"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@page.get("/pair")
def pair_page() -> Response:
    """The pairing page: QR live with a countdown, or a phone code (HTML for people).
    ---
    get:
      tags: [page]
      responses:
        200:
          description: The page; the key typed into it is sent only in request headers
          content: {text/html: {schema: {type: string}}}
    """
    response = Response(render_template("pair.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@page.get("/pair/static/<name>")
def pair_asset(name: str) -> Response:
    """The pairing page's script or style sheet.
    ---
    get:
      tags: [page]
      parameters:
        - in: path
          name: name
          required: true
          schema: {type: string, enum: [pair.js, pair.css]}
      responses:
        200:
          description: The file
          content:
            text/javascript: {schema: {type: string}}
            text/css: {schema: {type: string}}
        404: NotFound
    """
    if name not in ASSETS:
        raise NotFound("no such file")
    response = Response(_asset(name), mimetype=ASSETS[name])
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()
