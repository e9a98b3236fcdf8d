"""Queries over captured records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, func, select

from tiergate.store.schema import records


def in_window(q: Any, table: Any = records, *, since: float | None = None, until: float | None = None,
              workload: str | None = None) -> Any:
    """`q` limited to the records of `table` (the records table or an alias of it) that arrived in [since, until)
    and belong to `workload`; a bound left None is no bound."""
    if since is not None:
        q = q.where(table.c.created_at >= since)
    if until is not None:
        q = q.where(table.c.created_at < until)
    if workload is not None:
        q = q.where(table.c.workload == workload)
    return q


def query_records(
    engine: Engine,
    *,
    workload: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    role: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = 50,
    newest_first: bool = True,
) -> list[dict[str, Any]]:
    return list(iter_records(engine, workload=workload, tier=tier, status=status, role=role, since=since,
                             until=until, limit=limit, newest_first=newest_first))


def iter_records(
    engine: Engine,
    *,
    workload: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    role: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    by_time: bool = False,
) -> Iterator[dict[str, Any]]:
    """Records one at a time (streamed), in storage order, or by arrival time (`created_at`, then id) with
    `by_time`; `until` is exclusive."""
    q = in_window(select(records), since=since, until=until, workload=workload)
    if tier is not None:
        q = q.where(records.c.tier == tier)
    if status is not None:
        q = q.where(records.c.status == status)
    if role is not None:
        q = q.where(records.c.role == role)
    order = [records.c.created_at, records.c.id] if by_time else [records.c.id]
    q = q.order_by(*(c.desc() if newest_first else c.asc() for c in order))
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=1000).execute(q):
            yield dict(row._mapping)


def count_records(engine: Engine, **where: Any) -> int:
    q = select(func.count()).select_from(records)
    for key, value in where.items():
        if value is not None:
            q = q.where(records.c[key] == value)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def workload_names(engine: Engine, limit: int = 50) -> list[str]:
    """Workload names seen in the store, sorted (at most `limit`)."""
    q = select(records.c.workload).distinct().order_by(records.c.workload).limit(limit)
    with engine.connect() as conn:
        return [str(w) for w in conn.execute(q).scalars()]
