"""The sandbox network's records: settings, devices, connections, outgoing messages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from shared.errors import NotFound


class SandboxError(NotFound):
    """Raised when a phone-side request names something the network does not know."""


@dataclass
class Settings:
    """Server rules that tests may change at run time."""

    qr_first_s: float = 60.0
    qr_next_s: float = 20.0
    qr_count: int = 6
    removal_delay_s: float = 60.0
    latency_s: float = 0.0
    outage: bool = False


@dataclass
class Device:
    """One linked device of an account."""

    jid: str
    account: str
    keys: str
    tenant: str
    paired_at: float


@dataclass
class Connection:
    """One connection interval; the log keeps every one, live or ended."""

    id: int
    tenant: str
    mode: str
    device: str | None
    account: str | None
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    qr_code: str | None = None
    qr_index: int = 0
    qr_expires_at: float = 0.0
    pair_code: str | None = None  # the phone code this pairing asked for, if any
    pair_phone: str | None = None  # its account's number (digits)
    client: str = ""  # who dialled (host:pid): lets checkers tell owners apart

    @property
    def live(self) -> bool:
        """True until the connection has ended."""
        return self.ended_at is None

    @property
    def pairing(self) -> bool:
        """True while this is a pairing connection that has not paired yet."""
        return self.mode == "pair" and self.device is None

    def row(self) -> dict[str, Any]:
        """The public log row."""
        keys = ("id", "tenant", "mode", "device", "account", "started_at", "ended_at", "client")
        return {**{k: getattr(self, k) for k in keys}, "end_reason": self.end_reason}


@dataclass(frozen=True)
class Outgoing:
    """A message for one connection; ``close`` ends the socket after it (message may be None)."""

    conn_id: int
    message: dict[str, Any] | None
    close: bool = False


def account_for_tenant(tenant: str) -> str:
    """A stable phone number per tenant, so re-pairing reuses one account like one phone."""
    digest = int.from_bytes(hashlib.sha256(tenant.encode()).digest()[:8], "big")
    return "1" + str(digest % 10**10).zfill(10)
