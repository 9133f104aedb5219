"""The pairing page at ``/pair``: small, server-rendered, no front-end build.

The tenant types its id and key into the page; the key stays in the page's
memory and travels only in ``Authorization`` headers of ``fetch()`` calls, never
in a URL (EventSource cannot send headers, so the event stream is read with a
streaming ``fetch()`` that resumes with ``Last-Event-ID``). The script and the
style are static files, so the Content-Security-Policy allows no inline code.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

page = Blueprint("page", __name__, template_folder="templates", static_folder="static",
                 static_url_path="/pair/static")

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
