"""Celery tasks: readable wapair.* names, and arguments as sent carry tenant ids, never secrets."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals
from flask.testing import FlaskClient

from tests.api.conftest import ADMIN, auth

SECRET_LIKE = re.compile(r"key|secret|token|password|auth|credential", re.IGNORECASE)


def test_every_task_has_a_readable_name_and_only_tenant_arguments() -> None:
    from workers.app import celery

    ours = {name: task for name, task in celery.tasks.items() if not name.startswith("celery.")}
    assert {"wapair.kick", "wapair.reconcile"} <= set(ours)
    assert all(re.fullmatch(r"wapair\.[a-z_.]+", name) for name in ours), sorted(ours)
    for name, task in ours.items():
        params = inspect.signature(task.run).parameters
        secret_like = [p for p in params if SECRET_LIKE.search(p)]
        assert not secret_like, f"{name} takes {secret_like}: pass a tenant id, look it up"


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Every task message published meanwhile, as the broker receives it."""
    seen: list[dict[str, Any]] = []

    def record(body: Any, headers: dict[str, Any], **_: Any) -> None:
        args, kwargs, _embed = body
        seen.append({"task": headers["task"], "args": args, "kwargs": kwargs,
                     "raw": json.dumps([body, headers], default=str)})

    signals.before_task_publish.connect(record, weak=False)
    yield seen
    signals.before_task_publish.disconnect(record)


def test_task_arguments_as_sent_by_the_api(
    client: FlaskClient, tenant: tuple[str, str], published: list[dict[str, Any]]
) -> None:
    assert client.post("/api/whatsapp/pair", headers=auth(tenant)).status_code == 202
    assert client.post("/api/whatsapp/reset", headers=auth(tenant)).status_code == 202
    admin = {"X-Tenant-ID": tenant[0], "Authorization": f"Bearer {ADMIN}"}
    assert client.post("/api/whatsapp/reset", headers=admin).status_code == 202
    assert len(published) == 3
    for message in published:
        assert message["task"] == "wapair.kick"
        assert message["args"] == [tenant[0]] and message["kwargs"] == {"hops": 0}
        assert tenant[1] not in message["raw"] and ADMIN not in message["raw"]
