"""The store migration for rollouts and monitoring, with its DDL frozen as written (like `store.migrations`):
later changes to the tables in `tiergate.rollout.state` come as new migration functions, never edits here.

    from tiergate.rollout.migrations import m_rollouts_and_monitor
    MIGRATIONS.append(("m00N_rollouts_and_monitor", m_rollouts_and_monitor))

Idempotent (`checkfirst`): tables that `RolloutStore` / the monitor already created are left alone.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Connection, Float, Index, Integer, MetaData, String, Table, Text


def m_rollouts_and_monitor(conn: Connection) -> None:
    md = MetaData()
    Table(
        "rollouts", md,
        Column("workload", String(128), primary_key=True),
        Column("stage", String(32), nullable=False),
        Column("stages", JSON, nullable=False),
        Column("primary_tier", String(128), nullable=False),
        Column("candidate_tier", String(128), nullable=False),
        Column("candidate_model", Text),
        Column("held", Boolean, nullable=False, default=False),
        Column("version", Integer, nullable=False),
        Column("stage_since", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("reason", Text),
        Column("actor", String(64)),
    )
    events = Table(
        "rollout_events", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("workload", String(128), nullable=False),
        Column("from_stage", String(32)),
        Column("to_stage", String(32), nullable=False),
        Column("version", Integer, nullable=False),
        Column("reason", Text),
        Column("actor", String(64)),
        Column("at", Float, nullable=False),
        Column("stats", JSON),
    )
    Index("ix_rollout_events_workload", events.c.workload, events.c.id)
    checks = Table(
        "monitor_checks", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("workload", String(128), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("at", Float, nullable=False),
        Column("n", Integer, nullable=False),
        Column("statistic", Float),
        Column("p_value", Float),
        Column("alarm", Boolean, nullable=False),
        Column("detail", JSON),
    )
    Index("ix_monitor_checks_workload_at", checks.c.workload, checks.c.at)
    md.create_all(conn, checkfirst=True)
