"""The real WhatsApp backend: neonize (whatsmeow in Go) behind the port in ``port.py``.

The store is one SQLite file per tenant, or one PostgreSQL database for all
tenants (neonize picks the dialect from a ``postgres`` prefix of its ``name``).
Resuming a JID that is not in the store makes whatsmeow dereference a nil device
and the Go panic aborts the whole process, so the store is checked first
(:meth:`NeonizeBackend.has_device`). Tests point the dial at a closed local port
through ``proxy`` (HTTP or SOCKS5), which avoids any DNS lookup.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from neonize.utils.jid import Jid2String

from shared.tenants import validate_tenant_id

from .neonize_session import NeonizeSession
from .neonize_support import NeonizeAdapterError, parse_jid, quiet_neonize_loggers, redact
from .port import EventSink

log = logging.getLogger(__name__)



class NeonizeBackend:
    """Opens neonize sessions; SQLite file per tenant, or one shared PostgreSQL database."""

    name = "neonize"

    def __init__(self, store: str, *, proxy: str | None = None, setup_hold: float = 5.0,
                 device_name: str = "wapair", media_max_bytes: int = 5_000_000) -> None:
        self.store = store
        self.media_max_bytes = media_max_bytes  # MESSAGE_MAX_MEDIA_BYTES, for inbound too
        self.proxy = proxy
        self.device_name = device_name  # what the phone lists under Linked Devices
        self.setup_hold = setup_hold
        self.is_postgres = store.startswith(("postgres://", "postgresql://"))
        self._jids: dict[str, str] = {}  # tenant -> device JID, for deleting Postgres rows
        self._jids_lock = threading.Lock()
        if not self.is_postgres:
            Path(store).mkdir(mode=0o700, parents=True, exist_ok=True)
        quiet_neonize_loggers()

    def database(self, tenant: str) -> str:
        """What neonize receives as ``name``: the tenant's SQLite path or the Postgres URL."""
        validate_tenant_id(tenant)  # InvalidInput: it becomes a file name
        return self.store if self.is_postgres else str(Path(self.store) / f"{tenant}.sqlite3")

    def remember_jid(self, tenant: str, jid: str) -> None:
        """Record the tenant's device JID (what ``delete_store`` needs for Postgres)."""
        with self._jids_lock:
            self._jids[tenant] = jid

    def open_session(self, tenant: str, *, jid: str | None, on_event: EventSink,
                     may_connect: Callable[[], bool] | None = None,
                     lease_left: Callable[[], float | None] | None = None) -> NeonizeSession:
        """Start a session for ``tenant`` on its own thread and return at once.

        ``may_connect`` is asked before the dial; whatsmeow's own reconnects inside
        ``connect()`` are not covered (the owner closes the client when it fences).
        """
        database = self.database(tenant)
        if jid is not None:
            jid = Jid2String(parse_jid(jid))
            self.remember_jid(tenant, jid)
        session = NeonizeSession(self, tenant, jid, database, on_event, may_connect)
        session.start()
        return session

    def has_device(self, tenant: str, jid: str) -> bool:
        """Whether the tenant's store holds the device ``jid`` (resuming one it lacks aborts)."""
        query = "SELECT 1 FROM whatsmeow_device WHERE jid = "
        if self.is_postgres:
            import psycopg

            with psycopg.connect(self.store, connect_timeout=10) as conn:
                try:
                    return conn.execute(query + "%s", (jid,)).fetchone() is not None
                except psycopg.errors.UndefinedTable:
                    return False
        path = Path(self.database(tenant))
        if not path.exists():
            return False
        lite = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return lite.execute(query + "?", (jid,)).fetchone() is not None
        except sqlite3.OperationalError:  # no whatsmeow tables yet
            return False
        finally:
            lite.close()

    def delete_store(self, tenant: str, *, jid: str | None = None) -> None:
        """Remove the tenant's device keys: its SQLite files, or its rows in Postgres."""
        if not self.is_postgres:
            base = self.database(tenant)
            for path in (base, f"{base}-wal", f"{base}-shm", f"{base}-journal"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise NeonizeAdapterError(f"cannot delete store of {tenant}: {e}") from e
            return
        with self._jids_lock:
            jid = jid or self._jids.pop(tenant, None)
        if jid is None:
            log.warning("no known device JID for tenant %s; its Postgres rows stay", tenant)
            return
        import psycopg

        try:
            with psycopg.connect(self.store, connect_timeout=10) as conn:
                # whatsmeow's other tables reference whatsmeow_device ON DELETE CASCADE.
                conn.execute("DELETE FROM whatsmeow_device WHERE jid = %s", (jid,))
        except psycopg.errors.UndefinedTable:
            return
        except psycopg.Error as e:
            raise NeonizeAdapterError(f"cannot delete store of {tenant}: {redact(str(e))}") from e

