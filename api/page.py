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
    """The pairing page (HTML).
    ---
    summary: Pairing page for people
    description: >
      A small HTML page: enter the tenant id and key, start a QR or phone-code
      pairing, watch the QR refresh live and the state turn to connected.
    security: []
    responses:
      200:
        description: the page
        content:
          text/html:
            schema: {type: string}
    """
    response = Response(render_template("pair.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
