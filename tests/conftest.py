"""Shared fixtures: PostgreSQL when a server is reachable, store URLs for both back-ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PG_URL = os.environ.get("TIERGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def shared_data(name: str) -> Path:
    """A dataset under ../shared/data, or skip the test when ../shared is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is not beside this checkout)")
    return path


def _pg_admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=3)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    try:
        admin = _pg_admin_connect()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("TIERGATE_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL required (TIERGATE_REQUIRE_PG) but unreachable: {exc}")
        pytest.skip(f"no PostgreSQL server reachable at {PG_URL}: {exc}")
    name = f"tiergate_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'capture.db'}"
    return str(request.getfixturevalue("pg_url"))
