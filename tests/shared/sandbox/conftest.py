"""Fixtures that start real sandbox processes with short timings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sandbox_proc import SandboxProcess

FAST = {"qr_first_s": 1, "qr_next_s": 0.5, "qr_count": 3, "removal_delay_s": 0.5}


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    """A sandbox process with fast QR and removal timings."""
    with SandboxProcess().start(**FAST) as proc:
        yield proc
