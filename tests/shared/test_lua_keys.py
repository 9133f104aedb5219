"""Every Lua script touches only keys it was given in KEYS, so a Redis Cluster can route it.

A Cluster sends a script to the node of its keys' slot and refuses keys of other
slots; a key name built inside Lua (``'wa:' .. ARGV[1]``) is invisible to that
routing. So this reads every script as shared/scripts.py sends it (preludes
included) and checks that each key argument of each ``redis.call`` is
``KEYS[n]`` or a name bound only to ``KEYS[n]`` values: a local, a field of a
local table of them, or a parameter of a prelude function that every call passes
such a value. Which keys share a slot is what the product's call sites decide;
tests/shared/test_cluster.py runs them on a real Cluster.
"""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from shared import keys
from shared.scripts import _SOURCES

# Argument positions (0-based, after the command name) that are keys; "all": every one.
KEY_POSITIONS: dict[str, list[int] | str] = {
    "GET": [0], "SET": [0], "DEL": "all", "EXISTS": "all", "INCR": [0], "PEXPIRE": [0],
    "PTTL": [0], "HGET": [0], "HGETALL": [0], "HSET": [0], "HMGET": [0], "HSETNX": [0],
    "HINCRBY": [0],
    "HLEN": [0], "HEXISTS": [0], "RPUSH": [0], "LLEN": [0], "LREM": [0], "LINDEX": [0],
    "LMOVE": [0, 1], "XADD": [0], "ZADD": [0], "ZREM": [0], "ZCARD": [0], "ZREVRANGE": [0],
    "ZREMRANGEBYRANK": [0], "ZREMRANGEBYSCORE": [0], "ZRANGE": [0], "LRANGE": [0],
    "LPUSH": [0], "INFO": [], "TIME": [],
}
KEYS_ITEM = re.compile(r"^KEYS\[\d+\]$")


def split_args(text: str) -> list[str]:
    """Split a Lua argument list at its top-level commas (strings and brackets respected)."""
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def call_args(source: str, start: int) -> tuple[str, int]:
    """The text between the parenthesis at ``start`` and its match, and the match's index."""
    depth, quote = 0, ""
    for i in range(start, len(source)):
        ch = source[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return source[start + 1:i], i
    raise AssertionError("unbalanced parentheses")


def keys_only_table(expr: str) -> bool:
    """True for a table constructor whose every value is KEYS[n]: ``{a = KEYS[1], ...}``."""
    if not (expr.startswith("{") and expr.endswith("}")):
        return False
    fields = split_args(expr[1:-1])
    return bool(fields) and all(
        KEYS_ITEM.match(f.split("=", 1)[1].strip()) for f in fields if "=" in f
    ) and all("=" in f for f in fields)


def functions(source: str) -> list[tuple[str, list[str], int, int]]:
    """(name, parameters, start, end) of each ``local function`` (ended by an ``end`` at
    the start of a line, as the preludes are written)."""
    found = []
    for m in re.finditer(r"^local function (\w+)\(([^)]*)\)", source, re.M):
        end = source.index("\nend", m.end())
        params = [p.strip() for p in m.group(2).split(",") if p.strip()]
        found.append((m.group(1), params, m.start(), end))
    return found


def bound_locals(text: str) -> set[str]:
    """Names assigned only KEYS[n] or a KEYS-only table in ``text`` (``local a, b = x, y``)."""
    bound = set()
    for m in re.finditer(r"^\s*local ([\w, ]+?)\s*=\s*(.+)$", text, re.M):
        names = [n.strip() for n in m.group(1).split(",")]
        values = split_args(m.group(2))
        for name, value in zip(names, values, strict=False):
            if KEYS_ITEM.match(value) or keys_only_table(value):
                bound.add(name)
    # The value of a loop over KEYS itself: ``for i, key in ipairs(KEYS) do``.
    bound.update(re.findall(r"\bfor\s+\w+\s*,\s*(\w+)\s+in\s+ipairs\(KEYS\)", text))
    return bound


def _bound_value(arg: str, top_level: set[str]) -> bool:
    """True for KEYS[n], a KEYS-only table, or a top-level bound name (or its field)."""
    return bool(KEYS_ITEM.match(arg) or keys_only_table(arg)
                or (re.fullmatch(r"\w+(\.\w+)?", arg) and arg.split(".")[0] in top_level))


def _param_bound(source: str, top_level: set[str], function: str, index: int) -> bool:
    """True if every call of ``function`` passes a KEYS-bound value at ``index``."""
    calls = list(re.finditer(rf"(?<!function )\b{function}\(", source))
    for m in calls:
        args = split_args(call_args(source, m.end() - 1)[0])
        if not _bound_value(args[index] if index < len(args) else "", top_level):
            return False
    return bool(calls)


def _declared(source: str, top_level: set[str], arg: str,
              inside: tuple[str, list[str], int, int] | None) -> bool:
    if KEYS_ITEM.match(arg):
        return True
    if not re.fullmatch(r"\w+(\.\w+)?", arg):
        return False  # a literal, a concatenation, a call: a name made inside Lua
    root = arg.split(".", 1)[0]
    if inside is None:
        return root in top_level
    name, params, _, _ = inside
    return root in params and _param_bound(source, top_level, name, params.index(root))


def undeclared_keys(source: str) -> list[str]:
    """Every key argument of ``source`` that is not given in KEYS, with its call."""
    source = re.sub(r"--[^\n]*", "", source)  # comments (no script has '--' in a string)
    funcs = functions(source)
    top_level = bound_locals(source)
    problems = []
    for m in re.finditer(r"redis\.p?call\(", source):
        text, _ = call_args(source, m.end() - 1)
        args = split_args(text)
        command = args[0].strip("'\"").upper()
        if command not in KEY_POSITIONS:
            problems.append(f"unknown command {command} (add its key positions): {text}")
            continue
        positions = KEY_POSITIONS[command]
        rest = args[1:]
        inside = next((f for f in funcs if f[2] <= m.start() <= f[3]), None)
        for i in range(len(rest)) if positions == "all" else positions:
            if not _declared(source, top_level, rest[i], inside):
                problems.append(f"{command} key {rest[i]!r} is not from KEYS: redis.call({text})")
    return problems


@pytest.mark.parametrize("name", sorted(_SOURCES))
def test_every_script_touches_only_the_keys_it_declares(name: str) -> None:
    assert undeclared_keys(_SOURCES[name]) == []


def test_a_loop_over_keys_declares_its_value_and_only_that() -> None:
    loop = "for i, key in ipairs(KEYS) do\n  redis.call('ZCARD', key)\nend\n"
    assert undeclared_keys(loop) == []
    other = "for i, key in ipairs(ARGV) do\n  redis.call('ZCARD', key)\nend\n"
    assert undeclared_keys(other), "a loop over ARGV names keys made elsewhere"


def test_the_check_finds_a_key_built_inside_lua() -> None:
    built = "local t = ARGV[1]\nreturn redis.call('GET', 'wa:{' .. t .. '}:lease')\n"
    assert undeclared_keys(built), "a key name made of strings must be reported"
    hidden = ("local function peek(key)\n  return redis.call('GET', key)\nend\n"
              "local k = {lease = KEYS[1]}\npeek(k.lease)\npeek('wa:boot')\n")
    assert undeclared_keys(hidden), "a prelude function called with a literal key"
    fine = ("local function peek(key)\n  return redis.call('GET', key)\nend\n"
            "local k = {lease = KEYS[1]}\npeek(k.lease)\nredis.call('DEL', k.lease, KEYS[2])\n")
    assert undeclared_keys(fine) == []


def test_the_epoch_keys_share_one_slot_that_no_tenant_id_can_name() -> None:
    """redis_epoch.lua and worker_heartbeat.lua take all four: one slot, or a Cluster
    refuses them (CROSSSLOT). The tag "_" cannot be a tenant id ([a-z0-9] first)."""
    epoch = [keys.BOOT_MARKER, keys.LEASE_GRACE, keys.NODES, keys.WORKERS]
    assert len({key_slot(k.encode()) for k in epoch}) == 1
    assert all(k.startswith("wa:{_}:") for k in epoch)
