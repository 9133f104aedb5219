"""The tenant's webhook: set (the secret is shown once), read with its delivery state, delete."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import authenticated_tenant
from api.schemas import WebhookRequest, load_body
from api.services import services
from shared.errors import NotFound

webhooks = Blueprint("webhooks", __name__, url_prefix="/api/whatsapp")


@webhooks.put("/webhook")
def set_webhook() -> tuple[Response, int]:
    """Set or replace the webhook; a new secret is generated and shown in this response only.
    ---
    put:
      tags: [webhooks]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      requestBody:
        required: true
        content: {application/json: {schema: WebhookRequest}}
      responses:
        200:
          description: The webhook, with its new secret (shown this once)
          content: {application/json: {schema: WebhookCreated}}
        413: PayloadTooLarge
    """
    tenant = authenticated_tenant()
    body = load_body(request, WebhookRequest())
    return jsonify(services().webhook_configs().set(tenant, body["url"], body.get("events"))), 200


@webhooks.get("/webhook")
def get_webhook() -> Response:
    """The webhook and its delivery state, without the secret.
    ---
    get:
      tags: [webhooks]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      responses:
        200:
          description: The webhook and its delivery state
          content: {application/json: {schema: Webhook}}
    """
    tenant = authenticated_tenant()
    found = services().webhook_configs().get(tenant)
    if found is None:
        raise NotFound("no webhook set: PUT /api/whatsapp/webhook first", tenant=tenant)
    return jsonify(found)


@webhooks.delete("/webhook")
def delete_webhook() -> tuple[str, int]:
    """Remove the webhook; deliveries still queued are dropped.
    ---
    delete:
      tags: [webhooks]
      security: [{TenantKey: []}]
      parameters: [TenantId]
      responses:
        204: {description: Deleted}
    """
    tenant = authenticated_tenant()
    if not services().webhook_configs().delete(tenant):
        raise NotFound("no webhook set", tenant=tenant)
    return "", 204
