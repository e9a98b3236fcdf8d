"""A gateway in front of one stub upstream tier, with keys required and an admin token, for the failure and
hostile-input tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tiergate.testing.gateway import RunningGateway, run_gateway
from tiergate.testing.stub_process import StubProcess, start_stub

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def stub() -> Iterator[StubProcess]:
    """One stub upstream for a test module (import it there to use it)."""
    with start_stub(model="up-model") as s:
        yield s


@contextmanager
def keyed_gateway(tmp_path: Path, stub: StubProcess, *, max_body_bytes: int, read_s: float,
                  **extra: Any) -> Iterator[RunningGateway]:
    stub.reset()
    cfg = {
        "auth": {"require_key": True, "key_cache_s": 0, "admin_token": "admin-secret"},
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", "flush_interval_ms": 1},
        "server": {"max_body_bytes": max_body_bytes},
        "tiers": {"up": {"kind": "upstream", "base_url": stub.base_url, "zone": "external",
                         "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
                         "timeout": {"connect": 1, "read": read_s}, "retry": {"max_attempts": 1}}},
        "routing": {"default_tier": "up"},
        **extra,
    }
    with run_gateway(cfg) as running:
        yield running
