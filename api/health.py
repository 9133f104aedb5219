"""GET /health: is Redis reachable, are workers alive."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, Response, jsonify

from api.services import services
from shared import keys
from shared.errors import StoreUnavailable

health = Blueprint("health", __name__)
WORKER_FRESH_S = 10.0


@health.get("/health")
def check() -> tuple[Response, int]:
    """Is Redis reachable, are workers alive: 200 with the checks, 503 without Redis.
    ---
    get:
      tags: [health]
      responses:
        200:
          description: Redis answers; status is degraded when no worker is alive
          content: {application/json: {schema: HealthResponse}}
        503: ServiceUnavailable
    """
    client = services().redis
    try:
        client.ping()
        workers = client.zcount(keys.WORKERS, time.time() - WORKER_FRESH_S, "+inf")
    except redis.RedisError as e:
        raise StoreUnavailable("Redis is unreachable") from e
    status = "ok" if workers else "degraded"
    return jsonify({"status": status, "redis": "ok", "workers": int(workers)}), 200
