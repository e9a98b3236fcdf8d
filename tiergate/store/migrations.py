"""Ordered schema migrations, each recorded by name in `tiergate_migrations` once applied.

Each migration is a function of a SQLAlchemy Connection and carries its own DDL as it was when written, so
later changes to `schema.py` never rewrite history. On PostgreSQL the run holds an advisory lock, so several
gateway processes starting together migrate once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

Migration = Callable[[Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_records_and_keys(conn: Connection) -> None:
    md = MetaData()
    records = Table(
        "records", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
        Column("workload", String(128), nullable=False),
        Column("model", String(256)),
        Column("tier", String(128)),
        Column("route_reason", String(128)),
        Column("route_score", Float),
        Column("role", String(16), nullable=False),
        Column("parent_request_id", String(64)),
        Column("status", String(16), nullable=False),
        Column("http_status", Integer),
        Column("error", Text),
        Column("stream", Boolean, nullable=False),
        Column("messages", JSON),
        Column("params", JSON),
        Column("answer", Text),
        Column("response", JSON),
        Column("prompt_tokens", Integer),
        Column("completion_tokens", Integer),
        Column("latency_ms", Float),
        Column("cost_usd", Float),
        Column("api_key_id", String(32)),
        Column("caller", String(256)),
    )
    Index("ix_records_workload_created", records.c.workload, records.c.created_at)
    Index("ix_records_created", records.c.created_at)
    Index("ix_records_parent", records.c.parent_request_id)
    Table(
        "api_keys", md,
        Column("id", String(32), primary_key=True),
        Column("name", String(128), nullable=False),
        Column("key_hash", String(128), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("revoked_at", Float),
        Column("workloads", JSON),
    )
    md.create_all(conn)


@migration
def m002_rollouts_and_monitor(conn: Connection) -> None:
    from tiergate.rollout.migrations import m_rollouts_and_monitor

    m_rollouts_and_monitor(conn)


def _ensure_table(conn: Connection) -> None:
    md = MetaData()
    Table("tiergate_migrations", md, Column("name", String(128), primary_key=True),
          Column("applied_at", Float, nullable=False))
    md.create_all(conn)


def applied(conn: Connection) -> set[str]:
    _ensure_table(conn)
    return {row[0] for row in conn.execute(text("SELECT name FROM tiergate_migrations"))}


def migrate(engine: Engine) -> list[str]:
    """Apply pending migrations in order; returns the names applied now."""
    done: list[str] = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7366021)"))
        have = applied(conn)
        for name, fn in MIGRATIONS:
            if name in have:
                continue
            fn(conn)
            conn.execute(
                text("INSERT INTO tiergate_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": name, "t": time.time()},
            )
            done.append(name)
    return done
