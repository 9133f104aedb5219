"""How Redis replies become Python values, written once.

redis-py answers ``bytes`` unless a client decodes; wapair's clients do not (the
hot paths skip the decode), so every reader turns replies into text here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: bytes | str | None) -> str:
    """A reply as text; a missing value (``None``) as ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def decode_hash(mapping: Mapping[Any, Any]) -> dict[str, str]:
    """An ``HGETALL`` reply as text keys and values."""
    return {text(k): text(v) for k, v in mapping.items()}


def lease_owner(lease_value: bytes | str | None) -> str:
    """The worker id in a lease value ``<worker id>|<token>`` ("" when there is no lease)."""
    return text(lease_value).split("|", 1)[0]
