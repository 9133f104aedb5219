"""Builds the WhatsApp adapter the settings ask for."""

from __future__ import annotations

import os

from shared.config import Settings
from shared.whatsapp.port import WhatsAppBackend


def build_backend(settings: Settings) -> WhatsAppBackend:
    """The neonize adapter (production) or the sandbox client (tests, demos)."""
    if settings.wa_backend == "sandbox":
        from shared.whatsapp.sandbox_adapter import SandboxBackend

        store = settings.wa_store if not settings.store_is_postgres else "./var/sandbox-store"
        return SandboxBackend(settings.wa_sandbox_url, os.path.join(store, "sandbox"))
    from shared.whatsapp.neonize_adapter import NeonizeBackend

    return NeonizeBackend(settings.wa_store, proxy=settings.wa_proxy)
