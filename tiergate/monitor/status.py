"""What the monitor has found, read from the store (for `tiergate monitor status` and the admin API).

    monitor_status(engine)                 # {workload: {check: latest result, ..., "alarms_24h": {...}}}
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, select

from tiergate.rollout.state import ensure_tables, monitor_checks


def monitor_status(engine: Engine, workload: str | None = None, since_s: float = 86400.0) -> dict[str, Any]:
    """Per workload: the latest result of each check, and how many windows alarmed in the last `since_s`."""
    ensure_tables(engine)
    t = monitor_checks
    latest = (select(t.c.workload, t.c.kind, func.max(t.c.id).label("id")).group_by(t.c.workload, t.c.kind))
    if workload is not None:
        latest = latest.where(t.c.workload == workload)
    ids = [r.id for r in _rows(engine, latest)]
    out: dict[str, Any] = {}
    if not ids:
        return out
    for r in _rows(engine, select(t).where(t.c.id.in_(ids)).order_by(t.c.workload, t.c.kind)):
        out.setdefault(r.workload, {})[r.kind] = {"at": r.at, "n": r.n, "statistic": r.statistic,
                                                  "p_value": r.p_value, "alarm": bool(r.alarm), "detail": r.detail}
    counts = (select(t.c.workload, t.c.kind, func.count().label("windows"),
                     func.sum(func.cast(t.c.alarm, t.c.n.type)).label("alarms"))
              .where(t.c.at >= time.time() - since_s).group_by(t.c.workload, t.c.kind))
    for r in _rows(engine, counts):
        if r.workload in out and r.kind in out[r.workload]:
            out[r.workload][r.kind].update(windows_24h=int(r.windows), alarms_24h=int(r.alarms or 0))
    return out


def _rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query))
