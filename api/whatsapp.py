"""The tenant-facing endpoints under /api/whatsapp (paths kept from the original report)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import authenticated_tenant, wapair
from api.schemas import EmptyRequest, PairRequest, load_body
from shared.errors import StoreUnavailable
from shared.state import Accepted
from shared.taskqueue import send_kick

whatsapp = Blueprint("whatsapp", __name__, url_prefix="/api/whatsapp")
STATUS_URL = "/api/whatsapp/status"
QR_URL = "/api/whatsapp/qr"
PAIR_CODE_URL = "/api/whatsapp/pair-code"


def _kick(accepted: Accepted) -> None:
    try:
        send_kick(wapair()["celery"], accepted.command.tenant, accepted.owner or None)
    except Exception as e:  # kombu raises several types; the command is safe in the mailbox
        raise StoreUnavailable(
            "the command was queued but the broker did not take the notification; "
            "it will be picked up by the next sweep"
        ) from e


@whatsapp.post("/pair")
def pair() -> tuple[Response, int]:
    """Start pairing: 202, or 429 while one runs, or 409 when already connected."""
    tenant = authenticated_tenant()
    body = load_body(request, PairRequest())
    ext = wapair()
    accepted = ext["store"].begin_pairing(tenant, body["method"], ext["settings"].pairing_timeout_s,
                                          body.get("phone") or "")
    _kick(accepted)
    reply = {
        "pairing_id": accepted.command.pairing_id,
        "state": "pairing",
        "status_url": STATUS_URL,
        "qr_url": QR_URL,
    }
    if body["method"] == "phone":
        reply["pair_code_url"] = PAIR_CODE_URL
    return jsonify(reply), 202


@whatsapp.get("/status")
def status() -> Response:
    """The tenant's state, pairing, device, owner and last error."""
    return jsonify(wapair()["store"].status(authenticated_tenant()))


@whatsapp.get("/qr")
def qr() -> Response:
    """The QR code to show now, or 404."""
    return jsonify(wapair()["store"].current_qr(authenticated_tenant()))


def _command(kind: str) -> tuple[Response, int]:
    tenant = authenticated_tenant()
    load_body(request, EmptyRequest())
    accepted = wapair()["store"].enqueue(tenant, kind)
    _kick(accepted)
    body: dict[str, Any] = {"command_id": accepted.command.id, "command": kind,
                            "status_url": STATUS_URL}
    return jsonify(body), 202


@whatsapp.post("/reset")
def reset() -> tuple[Response, int]:
    """Cancel any pairing or connection and return to idle; a linked device stays linked."""
    return _command("reset")


@whatsapp.post("/logout")
def logout() -> tuple[Response, int]:
    """Unlink the device and delete its store."""
    return _command("logout")


@whatsapp.post("/resume")
def resume() -> tuple[Response, int]:
    """Connect the linked device again after a reset."""
    return _command("resume")
