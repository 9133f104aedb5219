"""Messages on the sandbox network: contacts' inboxes, held deliveries, receipts, violations.

A contact is any number that is not a tenant's account; its inbox is what
``GET /phone/inbox/<number>`` shows. What a tenant's account receives (a contact's
message, a receipt for one it sent) is *held* until a connected client of that
account acknowledges it, and offered again on every new connection, as WhatsApp's
offline queue does. A message of one sender reaching a recipient twice (the same
client reference delivered again) is recorded as a violation: that is what the
at-most-once tests and the chaos checker look for.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from shared.sandbox.records import Connection, SandboxError

_NUMBER = re.compile(r"[0-9]{5,20}")
_CHAT = re.compile(r"([0-9]{5,20})@s\.whatsapp\.net|[0-9]{5,20}(-[0-9]{1,20})?@g\.us")
TEXT_MAX = 65536


def _jid(number: str) -> str:
    return f"{number}@s.whatsapp.net"


class Wire(Protocol):
    """What the message side needs of the network (``shared.sandbox.network.Network``)."""

    connections: dict[int, Connection]
    clock: Callable[[], float]
    version: int  # bumped on every change a snapshot must save

    def live_clients(self, account: str) -> list[Connection]:
        """The live connections of ``account``'s linked devices."""

    def send(self, conn: Connection, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``conn``'s socket."""


class Messaging:
    """The message side of one network (which owns its connections)."""

    def __init__(self, network: Wire) -> None:
        self.net = network
        self.inboxes: dict[str, list[dict[str, Any]]] = {}  # contact number -> messages
        self.held: dict[str, dict[str, dict[str, Any]]] = {}  # account -> ack key -> item
        self.delivered: dict[str, str] = {}  # "sender|ref" -> wa_message_id
        self.senders: dict[str, tuple[str, str]] = {}  # wa_message_id -> (sender, chat)
        self.violations: list[dict[str, Any]] = []

    # -- a tenant's client sends ---------------------------------------------
    def send(self, conn_id: int, ref: str, chat: str, content: dict[str, Any]) -> str:
        """A connected client sends ``content`` to ``chat``; returns the new wa_message_id."""
        conn = self.net.connections.get(conn_id)
        if conn is None or not conn.live or conn.mode != "resume" or conn.account is None:
            raise SandboxError("not connected")
        match = _CHAT.fullmatch(chat)
        if match is None:
            raise ValueError("chat must be a user or group JID")
        text = content.get("text") or content.get("caption") or ""
        if not isinstance(text, str) or len(text) > TEXT_MAX:
            raise ValueError("text must be a string of at most 65536 characters")
        wa_id = "3EB0" + secrets.token_hex(8).upper()
        sender, now = conn.account, self.net.clock()
        entry: dict[str, Any] = {"from": sender, "wa_message_id": wa_id, "text": text,
                                 "at": now, "kind": content.get("kind", "text"), "read": False}
        if entry["kind"] != "text":
            entry["media"] = {"mime_type": content.get("mime_type", ""),
                              "filename": content.get("filename", ""),
                              "size": len(content.get("media_base64", "")) * 3 // 4}
        recipient = match.group(1) or chat
        if ref:
            key = f"{sender}|{ref}|{recipient}"
            if key in self.delivered:
                self.violations.append({"kind": "duplicate_delivery", "from": sender,
                                        "to": recipient, "ref": ref, "at": now,
                                        "wa_message_ids": [self.delivered[key], wa_id]})
            else:
                self.delivered[key] = wa_id
        self.inboxes.setdefault(recipient, []).append(entry)
        self.senders[wa_id] = (sender, recipient)
        # The contact's phone is always online here: delivered at once.
        self._hold(sender, f"r:{wa_id}:delivered", {"ev": "receipt", "wa_message_id": wa_id,
                                                    "status": "delivered", "at": now})
        self.net.version += 1
        return wa_id

    def ack(self, conn_id: int, key: str) -> None:
        """The client recorded a held item: forget it."""
        conn = self.net.connections.get(conn_id)
        if conn is not None and conn.account is not None:
            self.held.get(conn.account, {}).pop(key, None)
            self.net.version += 1

    def connected(self, conn: Connection) -> None:
        """A client of the account came online: offer it everything held, oldest first."""
        for item in list(self.held.get(conn.account or "", {}).values()):
            self.net.send(conn, item)

    # -- the contacts' phones ------------------------------------------------
    def phone_send(self, sender: str, to: str, text: str) -> dict[str, Any]:
        """A contact ``sender`` sends ``text`` to the account ``to`` (a tenant's number)."""
        if not _NUMBER.fullmatch(sender) or not _NUMBER.fullmatch(to):
            raise ValueError("from and to must be 5-20 digits")
        if not isinstance(text, str) or not text or len(text) > TEXT_MAX:
            raise ValueError("text must be 1 to 65536 characters")
        if sender == to:
            raise ValueError("from and to must differ")
        wa_id = "3A" + secrets.token_hex(9).upper()
        now = self.net.clock()
        self._hold(to, f"m:{wa_id}", {"ev": "message", "wa_message_id": wa_id,
                                      "from": _jid(sender), "chat": _jid(sender),
                                      "text": text, "at": now, "kind": "text"})
        self.net.version += 1
        return {"wa_message_id": wa_id, "at": now}

    def phone_read(self, number: str, wa_message_id: str) -> None:
        """The contact ``number`` reads a message it received: its sender gets the receipt."""
        entry = next((m for m in self.inboxes.get(number, [])
                      if m["wa_message_id"] == wa_message_id), None)
        if entry is None:
            raise SandboxError("no such message in this inbox")
        if not entry["read"]:
            entry["read"] = True
            self._hold(entry["from"], f"r:{wa_message_id}:read",
                       {"ev": "receipt", "wa_message_id": wa_message_id, "status": "read",
                        "at": self.net.clock()})
            self.net.version += 1

    def inbox(self, number: str) -> dict[str, Any]:
        """What the contact ``number`` received, and the duplicates among it."""
        if not _NUMBER.fullmatch(number):
            raise ValueError("number must be 5-20 digits")
        rows = [{k: v for k, v in m.items() if k != "read"} | {"read": m["read"]}
                for m in self.inboxes.get(number, [])]
        duplicates = [v for v in self.violations if v["to"] == number]
        return {"messages": rows, "duplicates": duplicates}

    def held_for(self, number: str) -> dict[str, Any]:
        """The inbound messages the account ``number`` has not acknowledged yet (their
        WhatsApp ids, oldest first): what a check of "inbound lost" tells from pending."""
        if not _NUMBER.fullmatch(number):
            raise ValueError("number must be 5-20 digits")
        return {"messages": [item["wa_message_id"] for item in self.held.get(number, {}).values()
                             if item["ev"] == "message"]}

    # -- internals -----------------------------------------------------------
    def _hold(self, account: str, key: str, item: dict[str, Any]) -> None:
        """Keep ``item`` for ``account`` until acked; send it to its live clients now."""
        item = {**item, "ack": key}
        self.held.setdefault(account, {})[key] = item
        for conn in list(self.net.live_clients(account)):
            if conn.mode == "resume" and conn.live:
                self.net.send(conn, item)

    def snapshot(self) -> dict[str, Any]:
        return {"inboxes": self.inboxes, "held": self.held, "delivered": self.delivered,
                "senders": {k: list(v) for k, v in self.senders.items()},
                "violations": self.violations}

    def restore(self, data: dict[str, Any]) -> None:
        self.inboxes = dict(data.get("inboxes", {}))
        self.held = dict(data.get("held", {}))
        self.delivered = dict(data.get("delivered", {}))
        self.senders = {k: (v[0], v[1]) for k, v in data.get("senders", {}).items()}
        self.violations = list(data.get("violations", []))
