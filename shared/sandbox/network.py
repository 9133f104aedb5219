"""The sandbox WhatsApp network's rules as a pure model: no I/O, an injectable clock.

Every call that can change what a client sees queues :class:`Outgoing` messages;
the server drains them and writes them to the sockets. Timers (QR rotation, the
pairing timeout, delayed device removal) fire from :meth:`Network.advance`,
which every public call runs first, so a stale QR code can never be scanned.

Over 300 lines: pairing, resume, conflicts and device removal are one model of one
rule (an account has one connection at a time), and its tests read it as one.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from shared.sandbox.messaging import Messaging
from shared.sandbox.records import (
    Connection,
    Device,
    Outgoing,
    SandboxError,
    Settings,
    account_for_tenant,
)

Clock = Callable[[], float]

_PHONE = re.compile(r"[0-9]{5,15}")
# whatsmeow's pair codes: 8 characters of this alphabet, shown as XXXX-XXXX.
_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


class Network:
    """Accounts, devices, connections and the rules that bind them."""

    def __init__(self, settings: Settings | None = None, clock: Clock = time.time) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self._next_id = 1
        self.accounts: dict[str, int] = {}  # account -> last device number handed out
        self.devices: dict[str, Device] = {}
        self.connections: dict[int, Connection] = {}
        self.conflicts: list[dict[str, Any]] = []
        self.bans: dict[str, tuple[int, float]] = {}  # jid -> (code, until)
        self.removals: dict[str, float] = {}  # jid -> when it is removed
        self._outbox: list[Outgoing] = []
        # Indexes of the live connections, so a ping or a timer costs O(1) and not
        # O(every connection ever): the log keeps them all, a busy sandbox holds 5,000.
        self._live_conns: dict[int, Connection] = {}
        self._live_pairings: dict[int, Connection] = {}  # live, mode "pair"
        self._live_by_tenant: dict[str, dict[int, Connection]] = {}
        self._live_by_account: dict[str, dict[int, Connection]] = {}
        self.version = 0  # bumped on every change so the server knows when to persist
        # No timer is due before this (a lower bound: lowered as timers are set, made
        # exact by each full pass), so advance() does not walk every live pairing on
        # each call (with hundreds of pairings open, the walks dominated its CPU).
        self._due_at = -math.inf
        self.messaging = Messaging(self)

    # -- client side -------------------------------------------------------

    def open_pairing(self, tenant: str, client: str = "") -> int | None:
        """Start a pairing connection and show its first QR code; None during an outage."""
        self.advance()
        if self.settings.outage:
            return None
        now = self.clock()
        conn = self._new_conn(tenant, "pair", None, None)
        conn.client = client
        conn.qr_code = secrets.token_urlsafe(12)
        conn.qr_expires_at = now + self.settings.qr_first_s
        self._due_at = min(self._due_at, conn.qr_expires_at)
        self.send(conn, self._qr_message(conn, now))
        return conn.id

    def open_resume(self, tenant: str, jid: str, keys: str, client: str = "") -> int | None:
        """Resume a linked device; rejects unknown devices and wrong keys; None in an outage."""
        self.advance()
        if self.settings.outage:
            return None
        device = self.devices.get(jid)
        known = device is not None and secrets.compare_digest(device.keys, keys)
        conn = self._new_conn(tenant, "resume", jid, device.account if device else None)
        conn.client = client
        ban = self.bans.get(jid)
        if not known:
            self._end(conn, "rejected", {"ev": "logged_out", "reason": 401, "on_connect": True})
        elif ban is not None:
            expire_s = round(ban[1] - self.clock(), 3)
            self._end(conn, "temporary_ban", {"ev": "temporary_ban", "code": ban[0],
                                              "expire_s": expire_s})
        else:
            self._admit(conn)
            self.send(conn, {"ev": "connected", "jid": jid})
            if conn.live:  # held messages and receipts come after the connect, as offline mail
                self.messaging.connected(conn)
        return conn.id

    def ping(self, conn_id: int) -> None:
        """Answer a keepalive ping."""
        self.advance()
        conn = self.connections.get(conn_id)
        if conn is not None and conn.live:
            self.send(conn, {"ev": "pong"})

    def logout(self, conn_id: int) -> None:
        """Unlink the connection's device at the client's request and close it."""
        self.advance()
        conn = self.connections.get(conn_id)
        if conn is None or not conn.live:
            return
        if conn.device is not None:
            self._forget_device(conn.device)
        message = {"ev": "logged_out", "reason": "client_logout", "on_connect": False}
        self._end(conn, "logout", message)

    def request_pair_code(self, conn_id: int, phone: str) -> str:
        """Give a live pairing a code to link by phone number (after its first QR, as whatsmeow)."""
        self.advance()
        if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
            raise ValueError("phone must be 5-15 digits")
        conn = self.connections.get(conn_id)
        if conn is None or not conn.live or not conn.pairing:
            raise SandboxError("no live pairing on this connection")
        raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
        conn.pair_code, conn.pair_phone = f"{raw[:4]}-{raw[4:]}", phone
        self.send(conn, {"ev": "pair_code", "code": conn.pair_code})
        return conn.pair_code

    def client_closed(self, conn_id: int) -> None:
        """Record that the client went away (EOF or reset)."""
        self.advance()
        conn = self.connections.get(conn_id)
        if conn is not None and conn.live:
            self._end(conn, "client_closed", None)

    # -- phone side --------------------------------------------------------

    def scan(self, code: str, phone: str | None = None) -> dict[str, str]:
        """Scan the current QR code of a live pairing: create a device, then force the 515."""
        self.advance()
        if phone is not None and not _PHONE.fullmatch(phone):
            raise ValueError("phone must be 5-15 digits")
        conn = next((c for c in list(self._live_pairings.values())
                     if c.pairing and c.qr_code == code), None)
        if conn is None:
            raise SandboxError("no live pairing shows this code")
        return self._link(conn, phone or account_for_tenant(conn.tenant))

    def enter_code(self, code: str, phone: str | None = None) -> dict[str, str]:
        """Enter a pair code on the phone (of number ``phone``): links like a scan."""
        self.advance()
        wanted = code.strip().upper().replace("-", "")
        conn = next((c for c in self._live() if c.pairing and c.pair_code
                     and c.pair_code.replace("-", "") == wanted), None)
        if conn is None or conn.pair_phone is None:
            raise SandboxError("no live pairing asked for this code")
        if phone is not None and phone != conn.pair_phone:
            raise SandboxError("this code was asked for another phone number")
        return self._link(conn, conn.pair_phone)

    def _link(self, conn: Connection, account: str) -> dict[str, str]:
        """Create a device of ``account`` for a pairing connection, then force the 515."""
        number = self.accounts.get(account, 0) + 1
        self.accounts[account] = number
        jid = f"{account}:{number}@s.whatsapp.net"
        keys = secrets.token_hex(16)
        self.devices[jid] = Device(jid, account, keys, conn.tenant, self.clock())
        conn.device, conn.account, conn.qr_code, conn.pair_code = jid, account, None, None
        self.send(conn, {"ev": "pair_success", "jid": jid, "keys": keys,
                          "platform": "sandbox", "business_name": ""})
        self._end(conn, "pair_515", {"ev": "stream_error", "code": 515})
        return {"jid": jid, "tenant": conn.tenant}

    def unlink(self, jid: str) -> None:
        """Remove a device from the phone's linked-devices list."""
        self.advance()
        if jid not in self.devices:
            raise SandboxError("unknown device")
        self._remove_device(jid, "unlinked")

    def ban(self, jid: str, code: int, expire_s: float) -> None:
        """Ban a device temporarily: its connection closes and resumes are refused until expiry."""
        self.advance()
        if jid not in self.devices:
            raise SandboxError("unknown device")
        if expire_s <= 0:
            raise ValueError("expire_s must be positive")
        self.bans[jid] = (code, self.clock() + expire_s)
        self._due_at = min(self._due_at, self.bans[jid][1])
        for conn in self._live():
            if conn.device == jid:
                message = {"ev": "temporary_ban", "code": code, "expire_s": expire_s}
                self._end(conn, "temporary_ban", message)
        self.version += 1

    def configure(self, **changes: Any) -> Settings:
        """Change settings at run time; ``outage=True`` drops every live connection."""
        names = {f.name for f in fields(Settings)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name, value in changes.items():
            if name == "outage":
                if not isinstance(value, bool):
                    raise ValueError("outage must be a boolean")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            elif name == "qr_count" and (not isinstance(value, int) or value < 1):
                raise ValueError("qr_count must be a positive integer")
        for name, value in changes.items():
            setattr(self.settings, name, value)
        if changes.get("outage"):
            self.drop_all("outage")
        self.advance()
        return self.settings

    def drop_all(self, reason: str) -> None:
        """End every live connection without a word (outage, server shutdown)."""
        for conn in self._live():
            self._end(conn, reason, None)

    # -- time --------------------------------------------------------------

    def advance(self) -> None:
        """Fire every timer that is due: QR rotation, pairing timeouts, device removals."""
        now = self.clock()
        if now < self._due_at:
            return
        for conn in list(self._live_pairings.values()):
            while conn.pairing and conn.live and now >= conn.qr_expires_at:
                if conn.qr_index + 1 >= self.settings.qr_count:
                    self._end(conn, "pairing_timeout", {"ev": "pairing_timeout"})
                    break
                conn.qr_index += 1
                conn.qr_code = secrets.token_urlsafe(12)
                conn.qr_expires_at += self.settings.qr_next_s
                if conn.qr_expires_at > now:  # skip codes a frozen clock jumped over
                    self.send(conn, self._qr_message(conn, now))
        for jid, at in sorted(self.removals.items(), key=lambda item: item[1]):
            if now >= at:
                del self.removals[jid]
                if jid in self.devices:
                    self._remove_device(jid, "device_removed")
        for jid in [j for j, (_, until) in self.bans.items() if until <= now]:
            del self.bans[jid]
        times = [c.qr_expires_at for c in self._live_pairings.values() if c.pairing and c.live]
        times += self.removals.values()
        times += (until for _, until in self.bans.values())
        self._due_at = min(times, default=math.inf)

    def next_deadline(self) -> float | None:
        """When :meth:`advance` next has work, on the model's clock (None: no timer)."""
        return None if self._due_at == math.inf else self._due_at

    # -- reading -----------------------------------------------------------

    def drain(self) -> list[Outgoing]:
        """Take every queued message."""
        out, self._outbox = self._outbox, []
        return out

    def connection_rows(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The connection log, oldest first."""
        return [c.row() for c in self.connections.values() if tenant in (None, c.tenant)]

    def pending(self) -> list[dict[str, Any]]:
        """The current QR code of every live pairing."""
        return [{"tenant": c.tenant, "code": c.qr_code, "index": c.qr_index,
                 "expires_at": c.qr_expires_at} for c in self._live_pairings.values()
                if c.pairing]

    def snapshot(self) -> dict[str, Any]:
        """Everything worth keeping across a restart, as JSON-ready data."""
        return {
            "accounts": self.accounts,
            "devices": [asdict(d) for d in self.devices.values()],
            "connections": [c.row() for c in self.connections.values()],
            "conflicts": self.conflicts,
            "bans": {jid: list(ban) for jid, ban in self.bans.items()},
            "removals": self.removals,
            "messaging": self.messaging.snapshot(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`; connections that were live end as ``server_restart``."""
        now = self.clock()
        self.accounts = dict(data.get("accounts", {}))
        self.devices = {d["jid"]: Device(**d) for d in data.get("devices", [])}
        self.connections = {}
        self._live_conns, self._live_pairings = {}, {}
        self._live_by_tenant, self._live_by_account = {}, {}
        for row in data.get("connections", []):
            conn = Connection(**row)
            if conn.live:
                conn.ended_at, conn.end_reason = now, "server_restart"
            self.connections[conn.id] = conn
        self._next_id = max(self.connections, default=0) + 1
        self.conflicts = list(data.get("conflicts", []))
        self.bans = {jid: (int(b[0]), float(b[1])) for jid, b in data.get("bans", {}).items()}
        self.removals = dict(data.get("removals", {}))
        self.messaging.restore(data.get("messaging", {}))
        self._due_at = -math.inf
        self.version += 1

    # -- internals ---------------------------------------------------------

    def _live(self) -> list[Connection]:
        return list(self._live_conns.values())

    def _index(self, conn: Connection) -> None:
        self._live_conns[conn.id] = conn
        if conn.mode == "pair":
            self._live_pairings[conn.id] = conn
        self._live_by_tenant.setdefault(conn.tenant, {})[conn.id] = conn
        if conn.account is not None:
            self._live_by_account.setdefault(conn.account, {})[conn.id] = conn

    def _unindex(self, conn: Connection) -> None:
        self._live_conns.pop(conn.id, None)
        self._live_pairings.pop(conn.id, None)
        for index, name in ((self._live_by_tenant, conn.tenant),
                            (self._live_by_account, conn.account or "")):
            group = index.get(name)
            if group is not None:
                group.pop(conn.id, None)
                if not group:
                    del index[name]

    def _new_conn(self, tenant: str, mode: str, jid: str | None, account: str | None) -> Connection:
        conn = Connection(self._next_id, tenant, mode, jid, account, self.clock())
        self._next_id += 1
        overlapping = list(self._live_by_tenant.get(tenant, {}).values())
        if overlapping and (mode == "pair" or any(c.pairing for c in overlapping)):
            self._conflict("pairing_overlap", conn, overlapping)
        self.connections[conn.id] = conn
        self._index(conn)
        self.version += 1
        return conn

    def _admit(self, conn: Connection) -> None:
        """Apply the rules for a device that just came online."""
        others = [c for c in self._live_by_account.get(conn.account or "", {}).values()
                  if c.id != conn.id and c.device is not None]
        same_device = [c for c in others if c.device == conn.device]
        if same_device:
            self._conflict("same_device", conn, same_device)
            for old in same_device:
                self._end(old, "stream_replaced", {"ev": "stream_replaced"})
        same_account = [c for c in others if c.account == conn.account and c.device != conn.device]
        if same_account:
            self._conflict("same_account", conn, same_account)
            involved = [self.devices[c.device] for c in [*same_account, conn]
                        if c.device in self.devices]
            newest = max(involved, key=lambda d: (d.paired_at, d.jid.split("@")[0]))
            due = self.clock() + self.settings.removal_delay_s
            self._due_at = min(self._due_at, self.removals.setdefault(newest.jid, due))

    def _conflict(self, kind: str, conn: Connection, others: list[Connection]) -> None:
        involved = [*others, conn]
        self.conflicts.append({
            "kind": kind, "tenant": conn.tenant, "account": conn.account,
            "connections": [c.id for c in involved],
            "devices": sorted({c.device for c in involved if c.device is not None}),
            "at": self.clock(),
        })

    def _remove_device(self, jid: str, detail: str) -> None:
        self._forget_device(jid)
        message = {"ev": "logged_out", "reason": 401, "on_connect": False, "detail": detail}
        for conn in self._live():
            if conn.device == jid:
                self._end(conn, detail, message)

    def _forget_device(self, jid: str) -> None:
        self.devices.pop(jid, None)
        self.removals.pop(jid, None)
        self.bans.pop(jid, None)
        self.version += 1

    def _qr_message(self, conn: Connection, now: float) -> dict[str, Any]:
        expires_in = round(conn.qr_expires_at - now, 3)
        return {"ev": "qr", "code": conn.qr_code, "expires_in": expires_in,
                "index": conn.qr_index}

    def send(self, conn: Connection, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``conn``'s socket (the server writes it on ``drain``)."""
        self._outbox.append(Outgoing(conn.id, message))

    def live_clients(self, account: str) -> list[Connection]:
        """The live connections of ``account``'s linked devices."""
        return list(self._live_by_account.get(account, {}).values())

    def _end(self, conn: Connection, reason: str, message: dict[str, Any] | None) -> None:
        conn.ended_at, conn.end_reason, conn.qr_code = self.clock(), reason, None
        self._unindex(conn)
        self._outbox.append(Outgoing(conn.id, message, close=True))
        self.version += 1
