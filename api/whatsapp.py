"""The tenant-facing endpoints under /api/whatsapp (paths kept from the original report)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import authenticated_read, authenticated_tenant, rate_limited
from api.metrics import log_context
from api.qr import qr_form, qr_response
from api.schemas import EmptyRequest, PairRequest, load_body
from api.services import services
from shared import metrics
from shared.state import Accepted

whatsapp = Blueprint("whatsapp", __name__, url_prefix="/api/whatsapp")
STATUS_URL = "/api/whatsapp/status"
QR_URL = "/api/whatsapp/qr"
PAIR_CODE_URL = "/api/whatsapp/pair-code"


def _kick(accepted: Accepted) -> None:
    services().kick(accepted.command.tenant, accepted.owner,
                    if_lost="the command will be picked up by the next sweep")


@whatsapp.post("/pair")
@rate_limited
def pair() -> tuple[Response, int]:
    """Start pairing: 202, or 429 while one runs, or 409 when already connected.
    ---
    post:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      requestBody:
        required: false
        content: {application/json: {schema: {$ref: '#/components/schemas/PairRequest'}}}
      responses:
        202:
          description: Accepted; the QR code appears at qr_url within seconds
          content: {application/json: {schema: PairAccepted}}
        409: Conflict
        413: PayloadTooLarge
        429: TooManyRequests
    """
    tenant = authenticated_tenant()
    body = load_body(request, PairRequest())
    found = services()
    accepted = found.store.begin_pairing(tenant, body["method"], found.settings.pairing_timeout_s,
                                         body.get("phone") or "")
    metrics.pairing_started(body["method"])
    log_context(tenant=tenant, pairing_id=accepted.command.pairing_id)
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
    """The tenant's state, pairing, device, owner and last error (one Redis round trip).
    ---
    get:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      responses:
        200:
          description: The tenant's state
          content: {application/json: {schema: StatusResponse}}
    """
    store = services().store
    tenant, replies = authenticated_read(store.status_commands)
    return jsonify(store.status_from(tenant, replies))


@whatsapp.get("/qr")
def qr() -> Response:
    """The QR code to show now: JSON text, PNG or SVG, or 404 when there is none.
    ---
    get:
      tags: [whatsapp]
      description: >
        The form comes from `?format=` if given, else from `Accept`
        (application/json, image/png, image/svg+xml; JSON when Accept allows
        anything). Images carry the code's expiry and index in headers.
        Codes rotate (60 s, then 20 s each); ask again after expires_at.
      security: [{TenantKey: []}]
      parameters:
        - TenantId
        - in: query
          name: format
          required: false
          schema: {type: string, enum: [json, png, svg]}
      responses:
        200:
          description: The code; never cached
          headers:
            X-QR-Expires-At:
              description: Unix seconds when this code stops being valid
              schema: {type: number}
            X-QR-Index:
              description: Which code of the pairing this is (0 first)
              schema: {type: integer}
            Cache-Control:
              schema: {type: string, enum: [no-store]}
          content:
            application/json: {schema: QrResponse}
            image/png: {schema: {type: string, format: binary}}
            image/svg+xml: {schema: {type: string}}
        406: NotAcceptable
    """
    tenant = authenticated_tenant()
    form = qr_form(request)
    code = services().store.current_qr(tenant)
    return qr_response(code, form)


def _command(kind: str) -> tuple[Response, int]:
    tenant = authenticated_tenant()
    load_body(request, EmptyRequest())
    accepted = services().store.enqueue(tenant, kind)
    _kick(accepted)
    body: dict[str, Any] = {"command_id": accepted.command.id, "command": kind,
                            "status_url": STATUS_URL}
    return jsonify(body), 202


@whatsapp.post("/reset")
@rate_limited
def reset() -> tuple[Response, int]:
    """Cancel any pairing or connection and return to idle; a linked device stays linked.
    ---
    post:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      requestBody:
        required: false
        content: {application/json: {schema: EmptyRequest}}
      responses:
        202:
          description: Queued for the tenant's owner; watch status_url
          content: {application/json: {schema: CommandAccepted}}
        413: PayloadTooLarge
        429: TooManyRequests
    """
    return _command("reset")


@whatsapp.post("/logout")
@rate_limited
def logout() -> tuple[Response, int]:
    """Unlink the device and delete its store.
    ---
    post:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      requestBody:
        required: false
        content: {application/json: {schema: EmptyRequest}}
      responses:
        202:
          description: Queued for the tenant's owner; watch status_url
          content: {application/json: {schema: CommandAccepted}}
        413: PayloadTooLarge
        429: TooManyRequests
    """
    return _command("logout")


@whatsapp.post("/resume")
def resume() -> tuple[Response, int]:
    """Connect the linked device again after a reset.
    ---
    post:
      tags: [whatsapp]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      requestBody:
        required: false
        content: {application/json: {schema: EmptyRequest}}
      responses:
        202:
          description: Queued for the tenant's owner; watch status_url
          content: {application/json: {schema: CommandAccepted}}
        409: Conflict
        413: PayloadTooLarge
    """
    return _command("resume")
