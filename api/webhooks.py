"""The tenant's webhook: set (the secret is shown once), read with its delivery state, delete."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import authenticated_tenant, wapair
from api.schemas import WebhookRequest, load_body
from shared.errors import NotFound
from shared.webhooks import WebhookConfigs

webhooks = Blueprint("webhooks", __name__, url_prefix="/api/whatsapp")


def _configs() -> WebhookConfigs:
    return WebhookConfigs(wapair()["redis"], outbound=wapair()["outbound"])


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
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        404: NotFound
        413: PayloadTooLarge
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    tenant = authenticated_tenant()
    body = load_body(request, WebhookRequest())
    return jsonify(_configs().set(tenant, body["url"], body.get("events"))), 200


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
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    tenant = authenticated_tenant()
    found = _configs().get(tenant)
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
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableEntity
        503: ServiceUnavailable
    """
    tenant = authenticated_tenant()
    if not _configs().delete(tenant):
        raise NotFound("no webhook set", tenant=tenant)
    return "", 204
