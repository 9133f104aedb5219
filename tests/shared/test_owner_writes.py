"""The owner's named writes: each writes a move of the state machine's tables, and the
workers write through nothing else."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import redis

from shared import keys
from shared import owner_writes as writes
from shared.state import SessionStore
from shared.state_machine import OWNER, PAIRING_MOVES, SESSION_MOVES, PairingStatus, SessionState

ROOT = Path(__file__).resolve().parents[2]
NAMED = [f for name, f in vars(writes).items()
         if inspect.isfunction(f) and not name.startswith("_") and f.__module__ == writes.__name__]
SAMPLE_ARGS = {"pairing_id": "p1", "owner": "w1|x", "value": "v", "ttl_ms": 1000, "jid": "1@s",
               "status": PairingStatus.EXPIRED, "state": SessionState.IDLE, "error": "",
               "ended_at": "1.000"}


def _build(f: object) -> writes.OwnerWrite:
    params = inspect.signature(f).parameters  # type: ignore[arg-type]
    return f(**{n: SAMPLE_ARGS[n] for n, p in params.items()  # type: ignore[operator]
                if p.default is inspect.Parameter.empty})


def test_every_named_write_targets_an_owner_move() -> None:
    assert len(NAMED) >= 10
    owner_states = {m.target for m in SESSION_MOVES if m.by == OWNER}
    owner_statuses = {m.target for m in PAIRING_MOVES if m.by == OWNER}
    for f in NAMED:
        write = _build(f)
        assert write.name == f.__name__
        assert write.session.get("state", SessionState.IDLE) in owner_states
        assert write.pairing.get("status", PairingStatus.QR) in owner_statuses


@pytest.mark.parametrize("session, pairing", [({"state": "pairing"}, {}),
                                              ({}, {"status": "queued"}),
                                              ({"state": "nonsense"}, {})])
def test_a_write_the_table_does_not_give_the_owner_is_refused_when_built(
        session: dict[str, str], pairing: dict[str, str]) -> None:
    # 'pairing' and 'queued' are begin_pairing.lua's moves, never the owner's.
    with pytest.raises(ValueError, match="the owner has no move"):
        writes.OwnerWrite("odd", session=session, pairing=pairing)


def test_the_workers_write_only_named_writes() -> None:
    """No generic field write in workers/: every ``_write`` gets a named write."""
    found, generic = 0, []
    for path in sorted((ROOT / "workers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", "")
            if name == "fenced_write":
                generic.append(f"{path.name}:{node.lineno} fenced_write")
            if name != "_write":
                continue
            found += 1
            arg = node.args[0] if node.args else None
            named = (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute)
                     and isinstance(arg.func.value, ast.Name) and arg.func.value.id == "writes")
            if node.keywords or not (named or isinstance(arg, ast.Name)):
                generic.append(f"{path.name}:{node.lineno}")
    assert found >= 10
    assert generic == []


def test_apply_writes_what_the_name_says(booted_redis: redis.Redis, tenant_id: str) -> None:
    store = SessionStore(booted_redis)
    booted_redis.set(keys.fence(tenant_id), 3)
    assert store.apply(tenant_id, 3, writes.connected("w1|x", "123@s.whatsapp.net")) == 1
    session, _ = store.read(tenant_id)
    assert (session["state"], session["device"], session["owner"]) == (
        "connected", "123@s.whatsapp.net", "w1|x")
    assert store.apply(tenant_id, 3, writes.reconnecting(owner="")) == 1
    session, _ = store.read(tenant_id)
    assert (session["state"], session["owner"]) == ("reconnecting", "")
    assert store.apply(tenant_id, 2, writes.link_restored()) == 0  # an older fence
    assert store.read(tenant_id)[0]["state"] == "reconnecting"
