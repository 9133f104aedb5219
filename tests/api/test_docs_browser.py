"""/docs in a real headless Chromium: Swagger UI renders every operation of the 3.1 document
and the page fetches nothing but this server's own URLs."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from api.openapi import build_spec

CHROMIUM = "/usr/bin/chromium"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a real HTTP port (werkzeug, in a thread) for the browser."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root "
                    "with apt; without it this browser test cannot run")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield chromium
        chromium.close()


def test_swagger_ui_renders_every_operation_from_local_files(
    app: Flask, served: str, browser: Any
) -> None:
    operations = sum(len(ops) for ops in build_spec(app)["paths"].values())
    page = browser.new_page()
    fetched: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    page.goto(f"{served}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() == operations
    assert page.locator(".info .title").inner_text().startswith("wapair")
    assert not page.is_visible("text=Unable to render this definition")
    assert not errors, errors
    outside = [url for url in fetched if not url.startswith(served) and not url.startswith("data:")]
    assert not outside, f"the docs page fetched from elsewhere: {outside}"
    page.close()
