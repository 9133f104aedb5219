"""The WhatsApp port and its adapters (neonize for production, sandbox for tests and demos)."""
