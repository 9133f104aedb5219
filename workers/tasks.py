"""Celery tasks: thin wrappers that hand work to the worker's SessionHost."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from shared.taskqueue import CLEANUP_TASK, KICK_TASK, RECONCILE_TASK
from shared.tenants import validate_tenant_id
from workers.session_host import SessionHost
from workers.webhook_task import register_webhook_task


def register_tasks(app: Celery, current_host: Callable[[], SessionHost | None]) -> None:
    """Define wapair's tasks on ``app``; ``current_host`` finds this process's host."""

    @app.task(name=KICK_TASK, ignore_result=True)
    def kick(tenant: str, hops: int = 0) -> str:
        """Mail is waiting for a tenant: its owner drains it, or a worker claims it."""
        host = current_host()
        if host is None:
            return "no-host"
        return host.kick(validate_tenant_id(tenant), int(hops), first_here=True)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile() -> int:
        """Beat's sweep: claim every tenant that wants an owner and has none."""
        host = current_host()
        return host.claim_scan() if host is not None else 0

    @app.task(name=CLEANUP_TASK, ignore_result=True)
    def cleanup() -> dict[str, int]:
        """Beat's cleanup: stuck pairings, stale QR codes, the active hint, dead workers."""
        host = current_host()
        if host is None:
            return {}
        return {k: len(v) for k, v in vars(host.cleanup()).items()}

    register_webhook_task(app)
