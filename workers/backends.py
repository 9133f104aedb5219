"""Builds the worker's WhatsApp backend: connection hosts running the adapter the settings ask for.

The worker process itself never loads a WhatsApp library (see ``workers.host``):
both adapters, neonize in production and the sandbox client in tests and demos,
run in connection-host processes behind the same protocol.
"""

from __future__ import annotations

import os
import socket

from shared.config import Settings
from workers.host.pool import HostLimits, HostPool


def host_config(settings: Settings) -> dict[str, object]:
    """The ``config`` frame a connection host starts from (sent over its socket)."""
    if settings.wa_backend == "sandbox":
        store = settings.wa_store if not settings.store_is_postgres else "./var/sandbox-store"
        return {"backend": "sandbox", "sandbox_url": settings.wa_sandbox_url,
                # The sandbox logs connections by owner: this worker, not the host.
                "client_id": f"{socket.gethostname()}:{os.getpid()}",
                "store": os.path.abspath(os.path.join(store, "sandbox")),
                "log_level": settings.log_level, "log_format": settings.log_format}
    store = settings.wa_store if settings.store_is_postgres else os.path.abspath(settings.wa_store)
    return {"backend": "neonize", "store": store, "proxy": settings.wa_proxy or "",
            "device_name": settings.wa_device_name, "log_level": settings.log_level,
            "log_format": settings.log_format,
            "media_max_bytes": settings.message_max_media_bytes}


def build_backend(settings: Settings) -> HostPool:
    """The worker's connection hosts for the adapter of ``WA_BACKEND``."""
    limits = HostLimits(
        sessions_per_host=settings.wa_sessions_per_host,
        close_timeout_s=settings.wa_host_close_timeout_s,
        # Each neonize session opens a PostgreSQL connection it never closes.
        max_store_opens=settings.wa_host_max_store_opens
        if settings.wa_backend == "neonize" and settings.store_is_postgres else 0,
    )
    return HostPool(settings.wa_backend, host_config(settings), limits)
