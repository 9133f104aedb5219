"""What every part of a tenant session shares: its fields, its client slot, the fenced write.

A ``TenantSession`` exists only while its worker holds the tenant's lease.
Every state write carries the lease's fence, so events that arrive after the
lease was lost (a paused process, a late callback from a dead socket) change
nothing. The fields below share one lock (``_lock``): commands, events and the
maintenance tick run on different threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from shared import owner_writes as writes
from shared.clock import Clock
from shared.config import Settings
from shared.errors import WapairError
from shared.lease import HeldLease, LeaseKeeper
from shared.logging_setup import ContextLog
from shared.messages import MessageStore
from shared.state import SessionStore, error_json
from shared.state_machine import PairingStatus, SessionState, WriteResult
from shared.whatsapp.port import WaEvent, WhatsAppBackend, WhatsAppSession
from workers.session.client_slot import ClientSlot
from workers.session.observers import DEFAULT_OBSERVERS, SessionObserver
from workers.session.pacing import SendPacer

#: How long a session waits for a client it closed to confirm ``CLOSED`` before it goes
#: on (a connection host kills a host that has not confirmed within
#: ``WA_HOST_CLOSE_TIMEOUT_S``, so this is only the last bound).
CLOSE_WAIT_S = 10.0

log = logging.getLogger("workers.session")


class SessionCore:
    """The owner's view of one tenant: its lease, its live client and its pairing."""

    def __init__(
        self,
        lease: HeldLease,
        *,
        store: SessionStore,
        leases: LeaseKeeper,
        backend: WhatsAppBackend,
        settings: Settings,
        clock: Clock,
        on_idle: Callable[[str], None],
        on_connected: Callable[[str, str], None] | None = None,
        messages: MessageStore | None = None,
        observers: Sequence[SessionObserver] = DEFAULT_OBSERVERS,
    ) -> None:
        self.tenant = lease.tenant
        self.lease = lease
        self._store = store
        self._leases = leases
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._on_idle = on_idle
        self._on_connected = on_connected  # (tenant, jid): the recovery record's refresh
        self._observers = tuple(observers)  # told of applied writes, events, messages
        self._messages = messages or MessageStore(store.redis_client, clock)
        self._lock = threading.RLock()
        self.online = threading.Event()  # the client is connected (sends wait for it)
        self._pacer = SendPacer(settings.send_rate_per_tenant, clock)
        # A temporary ban's expiry (monotonic): until then no client is opened and sends
        # wait in the outbox (``events._handle_temporary_ban``, ``resume_after_ban``).
        self.banned_until: float | None = None
        # Receipts that came before their send's 'sent' was written: wa id -> event data.
        self._early_receipts: dict[str, dict[str, Any]] = {}
        # The messages this session recorded 'sent': wa id -> our id, newest last, so
        # their receipts skip the index's lookup in Redis (a round trip each).
        self._sent_ids: dict[str, str] = {}
        self._slot = ClientSlot(lease, leases=leases, backend=backend, lock=self._lock)
        self.pairing_id = ""
        self.pairing_deadline: float | None = None  # monotonic
        self.pair_phone = ""  # digits of the number a phone-code pairing links (personal data)
        self._pair_code_asked = False
        self.pairing_started_at: float | None = None  # the API's clock, for the metrics
        self.taken_over = False
        # A session's end (failed, logged_out) that Redis did not take: retried each tick.
        self._unwritten_end: writes.OwnerWrite | None = None
        self._settled = threading.Event()  # the take-over's resume connected or gave up
        # (device, monotonic deadline) between PairSuccess and Connected
        self._paired: tuple[str, float] | None = None
        self.log = ContextLog(log, lambda: {"tenant": self.tenant, "fence": self.lease.fence,
                                            "pairing_id": self.pairing_id or None})

    # --- the client slot ----------------------------------------------------
    @property
    def handle(self) -> WhatsAppSession | None:
        """The open client, if any."""
        return self._slot.handle

    @property
    def mode(self) -> str | None:
        """"pair" or "resume" while a client is open."""
        return self._slot.mode

    @mode.setter
    def mode(self, mode: str | None) -> None:
        self._slot.mode = mode

    @property
    def fenced(self) -> bool:
        """True once the lease is gone (or about to be): nothing is written or opened."""
        return self._slot.fenced

    @fenced.setter
    def fenced(self, fenced: bool) -> None:
        self._slot.fenced = fenced

    def _open(self, mode: str, jid: str | None) -> bool:
        """Open a client unless the lease is gone; True if one was opened."""
        return self._slot.open(mode, jid, self._on_event)

    def _detach(self, close: bool = True, *, closed: bool = False) -> WhatsAppSession | None:
        """Forget the current client (its later events are ignored) and close it."""
        self.online.clear()
        return self._slot.detach(close, closed=closed)

    def _close_and_wait(self) -> None:
        handle = self._detach()
        if handle is not None and not handle.wait_closed(CLOSE_WAIT_S):
            self.log.error("tenant %s: old client did not stop within %.0f s", self.tenant,
                           CLOSE_WAIT_S)

    def _on_event(self, token: int, event: WaEvent) -> None:
        """An event of the client ``token`` opened (``workers.session.events``)."""
        raise NotImplementedError

    # --- what the observers hear (the metrics) -------------------------------
    def _observe_message(self, outcome: str, send_s: float | None = None) -> None:
        for observer in self._observers:
            observer.message_finished(self.tenant, outcome, send_s)

    def _observe_received(self) -> None:
        for observer in self._observers:
            observer.message_received(self.tenant)

    def _observe_event(self, kind: str, data: dict[str, Any]) -> None:
        for observer in self._observers:
            observer.event(self.tenant, kind, data)

    # --- writes -------------------------------------------------------------
    def _write(self, write: writes.OwnerWrite) -> WriteResult:
        """A named write under our fence; one refused (an older fence) drops the session."""
        if self.fenced:
            return WriteResult.REFUSED
        result = self._store.apply(self.tenant, self.lease.fence, write)
        if result is WriteResult.APPLIED:
            now = self._clock.time()
            for observer in self._observers:
                observer.applied(self.tenant, write, now)
        if result is WriteResult.REFUSED:
            self.log.warning("tenant %s: fence %s is stale; dropping the session",
                             self.tenant, self.lease.fence)
            self.fenced = True
            self._detach()
        return result

    def _write_end(self) -> bool:
        write = self._unwritten_end
        if write is None:
            return True
        try:
            self._write(write)
        except WapairError as e:
            self.log.warning("tenant %s: could not record the session's end yet (%s); retrying",
                             self.tenant, e)
            return False
        self._unwritten_end = None
        return True

    def _end_pairing(self, pairing_id: str, status: PairingStatus, state: SessionState,
                     error: str) -> None:
        now = f"{self._clock.time():.3f}"
        self._write(writes.pairing_ended(pairing_id, status, state, error, now))

    def _error(self, code: str, message: str, **extra: Any) -> str:
        return error_json(code, message, self._clock.time(), **extra)
