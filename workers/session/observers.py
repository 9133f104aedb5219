"""Who watches a session, its owner and the lease renewals: the metrics hang off them here, not
inline in the session or the lease.

``SessionCore._write`` tells every observer about each write Redis applied, with the
time it was made. A write that was refused (an older fence) or whose pairing part
was skipped (another pairing replaced it) is not reported: it did not happen. The
session tells them too of the WhatsApp events it counts, of each outbound message's
end and of each inbound message recorded for the first time.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared import metrics
from shared.owner_writes import OwnerWrite
from shared.state_machine import PairingStatus


class SessionObserver(Protocol):
    def applied(self, tenant: str, write: OwnerWrite, now: float) -> None:
        """``write`` took effect for ``tenant`` at ``now`` (wall clock)."""

    def event(self, tenant: str, kind: str, data: dict[str, Any]) -> None:
        """A final or conflict event came from ``tenant``'s client."""

    def message_finished(self, tenant: str, outcome: str, send_s: float | None) -> None:
        """An outbound message's send ended ``outcome`` (``send_s``: its time sending)."""

    def message_received(self, tenant: str) -> None:
        """An inbound message was recorded for the first time."""


class SessionMetrics:
    """The Prometheus side of a session (``shared/metrics.py`` defines the metrics)."""

    def event(self, tenant: str, kind: str, data: dict[str, Any]) -> None:
        metrics.whatsapp_event(kind, data)

    def message_finished(self, tenant: str, outcome: str, send_s: float | None) -> None:
        metrics.message_finished(outcome, send_s)

    def message_received(self, tenant: str) -> None:
        metrics.message_received()

    def applied(self, tenant: str, write: OwnerWrite, now: float) -> None:
        if write.name == "qr_shown" and write.cause == "first":
            metrics.observe_pairing_step("qr", write.since, now)
        elif write.name == "paired":
            metrics.pairing_ended(PairingStatus.PAIRED)
            metrics.observe_pairing_step("connected", write.since, now)
        elif write.name == "pairing_ended":
            metrics.pairing_ended(write.pairing["status"], write.session.get("last_error", ""))
        elif write.name == "reconnecting" and write.cause in ("dropped", "resumed"):
            metrics.reconnect(write.cause)


class OwnerObserver(Protocol):
    """Watches a worker's SessionHost, the owner of its tenants."""

    def counted(self, owned: int, pairing: int, resuming: int) -> None:
        """The worker owns ``owned`` tenants, with that many pair and resume clients."""

    def self_fenced(self, tenant: str, why: str) -> None:
        """The worker dropped ``tenant``'s session itself (its lease could be gone)."""


class OwnerMetrics:
    """The Prometheus side of a SessionHost."""

    def counted(self, owned: int, pairing: int, resuming: int) -> None:
        metrics.set_sessions(owned, pairing, resuming)

    def self_fenced(self, tenant: str, why: str) -> None:
        metrics.self_fenced()


class RenewalMetrics:
    """The Prometheus side of ``LeaseKeeper``'s renewal batches."""

    def renewed(self, seconds: float, lost: int) -> None:
        metrics.lease_renewed(seconds, lost)

    def renewal_failed(self) -> None:
        metrics.lease_renew_failed()


#: The observers a session reports to unless it is given others.
DEFAULT_OBSERVERS: tuple[SessionObserver, ...] = (SessionMetrics(),)
