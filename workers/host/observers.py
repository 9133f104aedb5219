"""Who watches a worker's connection hosts: the metrics hang off the pool here, not
inline in ``HostPool`` (as the session's do in workers/session/observers.py)."""

from __future__ import annotations

from typing import Protocol

from shared import metrics


class PoolObserver(Protocol):
    def started(self) -> None:
        """A connection host was started."""

    def ready(self, seconds: float) -> None:
        """A host answered ``ready`` ``seconds`` after it was started."""

    def lost(self, reason: str) -> None:
        """A host ended other than at shutdown (``exited``, or why it was killed)."""

    def counted(self, hosts: int, fullest: int) -> None:
        """The pool holds ``hosts`` hosts, the fullest with ``fullest`` sessions."""


class PoolMetrics:
    """The Prometheus side of a host pool (``shared/metrics.py`` defines the metrics)."""

    def started(self) -> None:
        metrics.host_started()

    def ready(self, seconds: float) -> None:
        metrics.observe_host_start(seconds)

    def lost(self, reason: str) -> None:
        metrics.host_lost(reason)

    def counted(self, hosts: int, fullest: int) -> None:
        metrics.set_hosts(hosts, fullest)
