"""Start a real sandbox WhatsApp network process for tests (``python -m shared.sandbox``)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class SandboxProcess:
    """One sandbox subprocess on a free port, its state file kept across :meth:`restart`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.timings: dict[str, float] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="wapair-sandbox-")
        self.state_path = os.path.join(self._dir.name, "state.json")
        self.log_path = os.path.join(self._dir.name, "sandbox.log")

    @property
    def url(self) -> str:
        """Base URL of the HTTP API (the wire protocol shares the port)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None, ready_timeout: float = 10.0, **timings: float
              ) -> SandboxProcess:
        """Launch the sandbox (timings like ``qr_first_s=1``) and wait for its ready line."""
        self.timings = timings or self.timings
        self.port = port or self.port or free_port()
        argv = [sys.executable, "-m", "shared.sandbox", "--host", "127.0.0.1",
                "--port", str(self.port), "--state", self.state_path]
        for name, value in self.timings.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                         stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    line = self.proc.stdout.readline()
                    if line.startswith("sandbox listening on "):
                        return self
                    if not line:
                        break
        self.stop()
        raise RuntimeError(f"sandbox did not start; log: {Path(self.log_path).read_text()}")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same devices."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> SandboxProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- HTTP API ----------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> requests.Response:
        """Call the HTTP API and return the raw response."""
        return requests.request(method, self.url + path, json=body, params=params, timeout=5)

    def _ok(self, method: str, path: str, body: dict[str, Any] | None = None,
            params: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.request(method, path, body, params)
        response.raise_for_status()
        return dict(response.json())

    def connections(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The connection log (optionally one tenant's)."""
        params = {"tenant": tenant} if tenant else None
        return list(self._ok("GET", "/connections", params=params)["connections"])

    def live_connections(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Connections that have not ended."""
        return [c for c in self.connections(tenant) if c["ended_at"] is None]

    def conflicts(self) -> list[dict[str, Any]]:
        """Every recorded conflict."""
        return list(self._ok("GET", "/conflicts")["conflicts"])

    def pending(self) -> list[dict[str, Any]]:
        """The current QR code of every live pairing."""
        return list(self._ok("GET", "/pending")["pending"])

    def inbox(self, number: str) -> dict[str, Any]:
        """What the contact ``number`` received: {"messages", "duplicates"}."""
        return self._ok("GET", f"/phone/inbox/{number}")

    def held(self, number: str) -> list[str]:
        """The WhatsApp ids of inbound messages the account ``number`` has not acked yet."""
        return list(self._ok("GET", f"/phone/held/{number}")["messages"])

    def phone_send(self, sender: str, to: str, text: str) -> dict[str, Any]:
        """A contact sends ``text`` to a tenant's number."""
        return self._ok("POST", "/phone/send", {"from": sender, "to": to, "text": text})

    def phone_read(self, number: str, wa_message_id: str) -> dict[str, Any]:
        """The contact ``number`` reads a message it received."""
        return self._ok("POST", "/phone/read", {"number": number, "wa_message_id": wa_message_id})

    def violations(self) -> list[dict[str, Any]]:
        """Every duplicate delivery the network saw."""
        return list(self._ok("GET", "/violations")["violations"])

    def scan(self, code: str, phone: str | None = None) -> dict[str, Any]:
        """Scan a QR code with the phone; returns ``{"jid", "tenant"}``."""
        body: dict[str, Any] = {"code": code}
        if phone is not None:
            body["phone"] = phone
        return self._ok("POST", "/phone/scan", body)

    def enter_code(self, code: str, phone: str | None = None) -> dict[str, Any]:
        """Enter a pair code on the phone (digits of its number); returns ``{"jid", "tenant"}``."""
        body: dict[str, Any] = {"code": code}
        if phone is not None:
            body["phone"] = phone
        return self._ok("POST", "/phone/code", body)

    def unlink(self, jid: str) -> dict[str, Any]:
        """Unlink a device from the phone."""
        return self._ok("POST", "/phone/unlink", {"jid": jid})

    def ban(self, jid: str, expire_s: float, code: int = 402) -> dict[str, Any]:
        """Ban a device temporarily."""
        return self._ok("POST", "/phone/ban", {"jid": jid, "code": code, "expire_s": expire_s})

    def control(self, **settings: Any) -> dict[str, Any]:
        """Change server settings at run time (timings, latency_s, outage)."""
        return self._ok("POST", "/control", settings)
