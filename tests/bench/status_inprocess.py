"""The status endpoint's own CPU next to the bare app's, in one process, without gunicorn.

Both Flask apps are called as WSGI applications (a fixed environ, the reply
read to the end), one request of each in turn, and each request's thread CPU
time (``time.thread_time``: user and system, the socket calls to Redis
included) is added to its app's total; the ratio is taken per block of
``N`` pairs. On a machine whose other load moves wall time by tens of per
cent, this ratio moves by a few: it is the figure to compare changes of the
API's own request path with. ``PROFILE=1`` prints a cProfile of the status
requests instead (``SORT=cumtime`` to change the order).

Run: ``python -m tests.bench.status_inprocess`` (``N``, ``ROUNDS`` to resize).
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tests.bench.bench_status import TENANT, _seed_status
from tests.bench.harness import create_tenants, start_redis

N = int(os.environ.get("N", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "8"))


def main() -> None:
    server, client = start_redis()
    try:
        api_key = create_tenants(client, [TENANT])[TENANT]
        _seed_status(client)
        os.environ["REDIS_URL"] = server.url
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="wapair-inproc-"))
        from api import create_app
        from shared.config import load_settings
        from shared.logging_setup import configure_logging
        from tests.bench import bare_app

        configure_logging(load_settings(), role="api")
        devnull = open(os.devnull, "w")  # noqa: SIM115  # the API's line is formatted and written
        sys.stderr = devnull
        status_app = create_app()
        headers = {"HTTP_X_TENANT_ID": TENANT, "HTTP_AUTHORIZATION": f"Bearer {api_key}"}
        bare = _caller(bare_app.app, "/bare", headers)
        status = _caller(status_app, "/api/whatsapp/status", headers)
        for _ in range(200):
            bare(), status()
        if os.environ.get("PROFILE"):
            _profile(status)
            return
        ratios, totals = [], {"bare": 0.0, "status": 0.0}
        clock = time.thread_time
        for _ in range(ROUNDS):
            spent = {"bare": 0.0, "status": 0.0}
            for _ in range(N):
                t0 = clock()
                bare()
                t1 = clock()
                status()
                spent["bare"] += t1 - t0
                spent["status"] += clock() - t1
            ratios.append(spent["status"] / spent["bare"])
            for name in totals:
                totals[name] += spent[name]
        per = {name: round(total / (N * ROUNDS) * 1e6, 1) for name, total in totals.items()}
        sys.stdout.write(f"thread CPU per request: bare {per['bare']} us, status "
                         f"{per['status']} us; status/bare median of {ROUNDS} blocks "
                         f"{statistics.median(ratios):.3f} {[round(r, 2) for r in ratios]}\n")
    finally:
        logging.shutdown()
        client.close()
        server.cleanup()


def _caller(app: Any, path: str, headers: dict[str, str]) -> Callable[[], None]:
    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        assert status.startswith("200"), status

    def call() -> None:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
                   "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8000",
                   "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, **headers}
        body = app(environ, start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    return call


def _profile(status: Callable[[], None]) -> None:
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(N * 3):
        status()
    profile.disable()
    pstats.Stats(profile, stream=sys.stdout).sort_stats(
        os.environ.get("SORT", "tottime")).print_stats(40)


if __name__ == "__main__":
    main()
