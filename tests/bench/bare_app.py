"""The baseline of the status benchmark: a bare Flask endpoint doing one Redis ``HGETALL``.

Served by plain gunicorn (no config file, so no access log) with the API's workers and threads
(``tests.bench.bare_app:app``); its Redis client comes from the same factory, so only the
endpoint's own work and what wapair adds around it differ.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

from shared import keys
from shared.config import load_settings
from shared.redis_client import connect_redis

app = Flask(__name__)
_redis = connect_redis(load_settings())


@app.get("/bare")
def bare() -> Response:
    raw = _redis.hgetall(keys.session(request.headers.get("X-Tenant-ID", "t")))
    return jsonify({k.decode(): v.decode() for k, v in raw.items()})


@app.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})
