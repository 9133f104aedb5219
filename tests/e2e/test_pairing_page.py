"""The /pair page in a real headless Chromium against real processes, plus live events and
webhooks over the same stack: Redis, the sandbox network, a Celery worker, gunicorn."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from shared.webhooks import sign
from tests.e2e.conftest import Tenant
from tests.support.ports import wait_for
from tests.support.receiver import Receiver
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import ROOT, Api, Worker

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]
PHONE = "+6281234567890"


@pytest.fixture(scope="module")
def worker(start_worker: Callable[..., Worker]) -> Worker:
    return start_worker("w-live", WEBHOOK_BACKOFF_S="0.2", WEBHOOK_MAX_ATTEMPTS="4")


@pytest.fixture(scope="module")
def stack(worker: Worker, start_api: Callable[..., Api]) -> Api:
    return start_api("api-live", EVENTS_STREAM_MAX_S="3", EVENTS_HEARTBEAT_S="1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root "
                    "with apt; without it this browser test cannot run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"playwright is not installed ({e}); `make test` installs the dev extras")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield chromium
        chromium.close()


def test_the_page_pairs_by_qr_then_by_phone_code(
    stack: Api, worker: Worker, sandbox: SandboxProcess, browser: Any
) -> None:
    tenant = Tenant(stack, "page-demo")
    key = tenant.headers["Authorization"].removeprefix("Bearer ")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{stack.url}/pair")
    page.fill("#tenant", tenant.id)
    page.fill("#key", "wak_wrong")
    page.click("#connect")
    page.wait_for_selector("#error:has-text('not valid')", timeout=10_000)
    assert page.is_visible("#login") and not page.is_visible("#panel")
    page.fill("#key", key)
    page.click("#connect")
    page.wait_for_selector("#state[data-state=idle]", timeout=10_000)
    assert page.inner_text("#error") == ""

    page.click("#start")
    page.wait_for_selector("#qr img, #qr pre", timeout=15_000)
    code = page.get_attribute("#qr", "data-code")
    assert code == tenant.wait_qr(stack)["code"]
    svg = requests.get(f"{stack.url}/api/whatsapp/qr?format=svg", timeout=10,
                       headers={**tenant.headers, "Accept": "image/svg+xml"})
    if svg.headers["Content-Type"].startswith("image/svg+xml"):
        # The image form of the QR code is served: the page must show it, not the text.
        page.wait_for_selector("#qr img[src^='blob:']", timeout=5_000)
    page.wait_for_selector("#qr-left:has-text('s left for this code')")
    width = page.get_attribute("#countdown", "style") or ""
    assert width.startswith("width:") and 0 < float(width.split(":")[1].strip(" %;")) <= 100
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pair-page-qr.png"), full_page=True)
    sandbox.scan(code)
    page.wait_for_selector("#state[data-state=connected]", timeout=15_000)
    assert page.is_visible("#connected") and not page.is_visible("#qr-box")
    page.screenshot(path=str(ARTIFACTS / "pair-page-connected.png"), full_page=True)

    page.click("#reset")
    page.wait_for_selector("#state[data-state=idle]", timeout=10_000)
    page.check("input[name=method][value=phone]")
    page.fill("#phone", PHONE)
    page.click("#start")
    page.wait_for_selector("#pair-code:not(:empty)", timeout=15_000)
    pair_code = page.inner_text("#pair-code")
    assert len(pair_code) == 9 and pair_code[4] == "-"
    assert pair_code == tenant.call(stack, "GET", "/api/whatsapp/pair-code").json()["code"]
    page.screenshot(path=str(ARTIFACTS / "pair-page-phone-code.png"), full_page=True)
    linked = sandbox.enter_code(pair_code, PHONE.lstrip("+"))
    page.wait_for_selector("#state[data-state=connected]", timeout=15_000)
    assert tenant.status(stack)["device"] == linked["jid"]

    assert errors == [], "the page's script raised"
    assert key not in page.url
    assert key not in stack.log() and key not in worker.log()
    assert PHONE.lstrip("+") not in stack.log() + worker.log(), "the number is personal data"
    page.close()


def read_sse(response: requests.Response, count: int) -> list[dict[str, str]]:
    """The first ``count`` messages of an open event stream."""
    messages, block = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in block:
                messages.append(block)
                if len(messages) == count:
                    return messages
            block = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            block[name] = value
    return messages


def test_events_resume_over_gunicorn_and_webhooks_arrive_signed_after_a_failure(
    stack: Api, worker: Worker, sandbox: SandboxProcess
) -> None:
    tenant = Tenant(stack, "live-demo")
    with Receiver([503, 200]) as receiver:
        hook = tenant.call(stack, "PUT", "/api/whatsapp/webhook", json={"url": receiver.url})
        secret = hook.json()["secret"]
        with tenant.call(stack, "GET", "/api/whatsapp/events", stream=True) as events:
            assert events.headers["Content-Type"].startswith("text/event-stream")
            assert tenant.call(stack, "POST", "/api/whatsapp/pair").status_code == 202
            first = read_sse(events, 3)
        assert [m["event"] for m in first] == ["pairing", "state", "pairing"]
        qr = tenant.wait_qr(stack)
        sandbox.scan(qr["code"])
        tenant.wait_state(stack, "connected", 15)
        # Resume after the first event: everything since then, in order, with no gap.
        with requests.get(f"{stack.url}/api/whatsapp/events", stream=True, timeout=10,
                          headers={**tenant.headers, "Last-Event-ID": first[0]["id"]}) as again:
            resumed = read_sse(again, 100)
        history = tenant.call(stack, "GET", "/api/whatsapp/history?limit=100").json()["events"]
        assert [m["id"] for m in resumed] == [e["id"] for e in history[1:]]
        assert history[-1]["kind"] == "state" and history[-1]["data"]["state"] == "connected"

        wanted = {e["id"] for e in history if e["kind"] in ("state", "pairing")}
        wait_for(lambda: len(receiver.requests) == len(wanted) + 1, 15,
                 "every state change delivered, one of them twice")
        assert {r["headers"]["X-Wapair-Event-Id"] for r in receiver.requests} == wanted
        for request in receiver.requests:
            headers = request["headers"]
            assert headers["X-Wapair-Signature"] == sign(secret, headers["X-Wapair-Timestamp"],
                                                         request["body"])
        retried = [r for r in receiver.requests if r["headers"]["X-Wapair-Attempt"] == "2"]
        assert len(retried) == 1, "the first delivery failed (503) and was retried"
        def delivered() -> dict[str, Any] | None:
            state = tenant.call(stack, "GET", "/api/whatsapp/webhook").json()["delivery"]
            return state if state["delivered"] == len(wanted) else None

        delivery = wait_for(delivered, 10, "the delivery state")
        assert delivery["failed"] == 0 and delivery["last_status"] == "delivered"
        assert secret not in json.dumps(delivery)
    assert secret not in worker.log() and receiver.url not in worker.log()
