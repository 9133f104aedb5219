"""When a connection host must go: the bounds that contain a library's hangs and leaks.

A pure function of what the worker knows about one host, so the rules can be
read, and tested, apart from the processes they act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.host.protocol import SILENT_HOST_S

#: Descriptors and threads a host may have beyond its sessions' own before it is
#: recycled (neonize leaks one store handle per session it ever opened).
SPARE_FDS, FDS_PER_SESSION = 64, 4
SPARE_THREADS, THREADS_PER_SESSION = 64, 4
#: An empty host this far above what it had at start holds leaked handles: it is
#: replaced at no cost (it holds nothing), so descriptors and database connections
#: go back to their baseline.
IDLE_SLACK_FDS, IDLE_SLACK_THREADS = 16, 32
#: With a store-open budget (PostgreSQL), an empty host that opened sessions is
#: replaced after this long: it holds one idle database connection per open.
IDLE_STORE_HOST_S = 5.0


@dataclass(frozen=True)
class HostView:
    """One host as its worker sees it at ``now`` (monotonic seconds)."""

    now: float
    sessions: int  # placed on it and not closed
    overdue_closes: int  # closes not confirmed by their deadline
    last_heard: float
    stats: dict[str, int]  # the host's last report ({} before the first)
    baseline: dict[str, int] | None  # its first report, before any session
    opens: int  # sessions ever placed on it
    empty_since: float | None
    retiring: bool


@dataclass(frozen=True)
class Verdict:
    """Why a host is killed: ``reason`` is the metric label, ``detail`` the log text."""

    reason: str
    detail: str


def judge(host: HostView, *, close_timeout_s: float, max_store_opens: int) -> Verdict | None:
    """The reason ``host`` must be killed now, or None."""
    stats, sessions = host.stats, host.sessions
    fds, threads = stats.get("fds", 0), stats.get("threads", 0)
    if host.overdue_closes:
        return Verdict("close_timeout", f"the close of {host.overdue_closes} session(s) was "
                                        f"not confirmed within {close_timeout_s:g} s")
    if host.now - host.last_heard > SILENT_HOST_S:
        return Verdict("silent", f"silent for {host.now - host.last_heard:.1f} s")
    if stats and (fds > SPARE_FDS + FDS_PER_SESSION * sessions
                  or threads > SPARE_THREADS + THREADS_PER_SESSION * sessions):
        return Verdict("recycled", f"recycled: {fds} descriptors and {threads} threads for "
                                   f"{sessions} session(s)")
    empty = sessions == 0 and stats.get("sessions") == 0
    base = host.baseline
    if empty and base and (fds > base.get("fds", 0) + IDLE_SLACK_FDS
                           or threads > base.get("threads", 0) + IDLE_SLACK_THREADS):
        return Verdict("recycled", f"recycled while empty: {fds} descriptors (at start "
                                   f"{base.get('fds')}), {threads} threads")
    if max_store_opens and sessions == 0 and host.opens and (
            host.retiring or host.now - (host.empty_since or host.now) > IDLE_STORE_HOST_S):
        # Every session it opened left a store connection open: drop them all.
        return Verdict("recycled", f"recycled: {host.opens} store open(s) behind it and no "
                                   "session left")
    return None
