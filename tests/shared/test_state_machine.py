"""The state machine's tables against the code that moves states: the Lua scripts
of shared/lua and the owner's Python in workers/."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.state_machine import (
    LIVE_STATES,
    OWNER,
    PAIRING_MOVES,
    SESSION_MOVES,
    PairingStatus,
    SessionState,
    WriteResult,
    pairing_move_allowed,
    session_move_allowed,
)

ROOT = Path(__file__).resolve().parents[2]
LUA = sorted((ROOT / "shared" / "lua").glob("*.lua"))
WORKERS = sorted((ROOT / "workers").rglob("*.py"))
STATES = {s.value for s in SessionState}
STATUSES = {s.value for s in PairingStatus}

HSET = re.compile(r"redis\.call\('HSET(?:NX)?',")
# An HSET field pair: 'state', 'idle' (session hash) or 'status', 'queued' (pairing hash).
HSET_PAIR = re.compile(r"'(state|status)',\s*'([a-z_]+)'")
# An event's fields (emit): state = 'idle', previous = 'pairing', status = 'expired'.
EVENT_FIELD = re.compile(r"\b(state|previous|status)\s*=\s*'([a-z_]+)'")
# A test of the session's state: state == 'pairing', state ~= 'idle'.
STATE_TEST = re.compile(r"\bstate\s*[=~]=\s*'([a-z_]+)'")


def _hset_arguments(text: str) -> list[str]:
    """The argument text of every ``redis.call('HSET', ...)``, which may span lines."""
    calls = []
    for match in HSET.finditer(text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        calls.append(text[match.end():end - 1])
    return calls


def _lua_writes(path: Path) -> set[tuple[str, str]]:
    return {pair for call in _hset_arguments(path.read_text())
            for pair in HSET_PAIR.findall(call)}


def _table_writes(by: str) -> set[tuple[str, str]]:
    return ({("state", m.target) for m in SESSION_MOVES if m.by == by}
            | {("status", m.target) for m in PAIRING_MOVES if m.by == by})


def test_the_lua_scripts_are_found() -> None:
    names = {p.name for p in LUA}
    assert {"begin_pairing.lua", "enqueue_command.lua", "cleanup_tenant.lua",
            "restore_tenant.lua", "fenced_write.lua"} <= names


@pytest.mark.parametrize("path", LUA, ids=lambda p: p.name)
def test_every_state_a_lua_script_writes_is_a_move_of_the_table(path: Path) -> None:
    writes = _lua_writes(path)
    for field, value in writes:
        assert value in (STATES if field == "state" else STATUSES), (path.name, field, value)
    # Both ways: the table names no move of this script that the script does not make.
    assert writes == _table_writes(path.name)


@pytest.mark.parametrize("path", LUA, ids=lambda p: p.name)
def test_the_states_a_lua_script_tests_and_emits_are_known(path: Path) -> None:
    text = path.read_text()
    for field, value in EVENT_FIELD.findall(text):
        assert value in (STATUSES if field == "status" else STATES), (path.name, field, value)
    for value in STATE_TEST.findall(text):
        assert value in STATES, (path.name, value)


def test_fenced_write_writes_only_what_it_is_given() -> None:
    """The owner's moves go through fenced_write.lua, which names no state itself."""
    assert _lua_writes(ROOT / "shared" / "lua" / "fenced_write.lua") == set()
    assert _table_writes(OWNER)


def test_every_move_is_between_known_states() -> None:
    movers = {p.name for p in LUA} | {OWNER}
    for moves, known in ((SESSION_MOVES, STATES), (PAIRING_MOVES, STATUSES)):
        for move in moves:
            assert move.sources and move.sources <= known and move.target in known, move
            assert move.by in movers and move.why, move


def test_the_table_answers_the_moves_the_design_names() -> None:
    S, P = SessionState, PairingStatus
    assert session_move_allowed(S.IDLE, S.PAIRING, "begin_pairing.lua")
    assert not session_move_allowed(S.CONNECTED, S.PAIRING, "begin_pairing.lua")
    assert session_move_allowed(S.PAIRING, S.CONNECTED)
    assert session_move_allowed(S.CONNECTED, S.RECONNECTING)
    assert not session_move_allowed(S.IDLE, S.CONNECTED)
    assert not session_move_allowed(S.LOGGED_OUT, S.FAILED)
    assert pairing_move_allowed(P.QR, P.PAIR_SUCCESS)
    assert not pairing_move_allowed(P.PAIRED, P.QR)
    assert pairing_move_allowed(P.QR, P.EXPIRED, "cleanup_tenant.lua")
    assert LIVE_STATES == {"pairing", "connected", "reconnecting"}


def test_the_enums_are_the_strings_redis_holds() -> None:
    assert SessionState.LOGGED_OUT == "logged_out" and f"{SessionState.IDLE}" == "idle"
    assert "pairing" in LIVE_STATES and PairingStatus.PAIR_SUCCESS == "pair_success"
    assert [WriteResult(n) for n in (0, 1, 2)] == [
        WriteResult.REFUSED, WriteResult.APPLIED, WriteResult.PAIRING_SKIPPED]


# --- the workers' Python ------------------------------------------------------
def _state_string(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value in STATES | STATUSES:
            return node.value
    return None


def _in_dict(node: ast.Dict, source: str) -> list[str]:  # {"state": "idle"}
    return [f"{{{key.value!r}: ...}}" for key, value in zip(node.keys, node.values, strict=True)
            if isinstance(key, ast.Constant) and key.value in ("state", "status")
            and _state_string(value)]


def _in_assign(node: ast.Assign | ast.AnnAssign, source: str) -> list[str]:  # state = "idle"
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names = {t.id for t in targets if isinstance(t, ast.Name)}
    if not names & {"state", "status", "current"} or node.value is None:
        return []
    return [f"{names} = ..." for sub in ast.walk(node.value) if _state_string(sub)]


def _in_compare(node: ast.Compare, source: str) -> list[str]:  # status in ("qr", ...)
    text = ast.get_source_segment(source, node) or ""
    if not re.search(r"state|status|current", text):
        return []
    return [text for sub in ast.walk(node) if _state_string(sub)]


def _in_call(node: ast.Call, source: str) -> list[str]:  # _end_pairing(id, "expired", ...)
    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
    if not re.search(r"end_pairing|finish|write", name):
        return []
    args = [*node.args, *(k.value for k in node.keywords)]
    return [f"{name}(...)" for arg in args if _state_string(arg)]


_CHECKS: dict[type, Callable[[Any, str], list[str]]] = {
    ast.Dict: _in_dict, ast.Assign: _in_assign, ast.AnnAssign: _in_assign,
    ast.Compare: _in_compare, ast.Call: _in_call,
}


def _bare_state_strings(path: Path) -> list[str]:
    """Bare state strings where a state is written, assigned or tested."""
    source = path.read_text()
    return [f"{path.name}:{node.lineno} {hit}" for node in ast.walk(ast.parse(source))
            if type(node) in _CHECKS for hit in _CHECKS[type(node)](node, source)]


def test_the_workers_write_and_test_states_through_the_enums() -> None:
    assert WORKERS
    bare = [hit for path in WORKERS for hit in _bare_state_strings(path)]
    assert bare == []


def test_the_bare_string_check_sees_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('def f(self, session):\n'
                      '    self._write(session={"state": "idle"})\n'
                      '    if session.get("state") == "pairing":\n'
                      '        self._end_pairing("p", "expired", x)\n'
                      '    state = "connected"\n')
    assert len(_bare_state_strings(sample)) == 4
