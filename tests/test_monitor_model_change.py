"""The monitor when the small model behind a workload is swapped (a retrained candidate): checks of the old
model's answers start afresh, their alarms clear, and the store records why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from sqlalchemy import select

from tiergate.config import parse_config
from tiergate.gateway.metrics import Metrics
from tiergate.monitor.config import MonitorConfig
from tiergate.monitor.monitor import Monitor, _Item
from tiergate.store.db import open_store


def test_model_change_clears_answer_alarms_and_records_why(tmp_path: Path) -> None:
    from tiergate.rollout.state import monitor_checks

    engine = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    config = parse_config({"tiers": {"small": {"kind": "local_lm"}}, "workloads": {"w": {"task": "classification"}}})
    gateway = SimpleNamespace(engine=engine, config=config)
    monitor = Monitor(gateway, MonitorConfig(window=20, step=10, alpha=0.01))
    rng = np.random.default_rng(0)
    monitor._wl("w")
    monitor.process([_Item("w", confidence=float(c)) for c in rng.beta(30, 1, 20)])  # the baseline
    monitor.process([_Item("w", confidence=float(c)) for c in rng.beta(2, 2, 40)])
    assert monitor.alarming("w") == ["confidence"]
    monitor.pending.append(_Item("w", text="queued", confidence=0.1))
    monitor.model_changed("w", "tier small now serves models/v2")
    assert monitor.alarming("w") == [] and "confidence" not in monitor.status()["workloads"]["w"]["checks"]
    assert monitor.pending[0].confidence is None and monitor.pending[0].text == "queued"
    with engine.connect() as conn:
        last = conn.execute(select(monitor_checks).order_by(monitor_checks.c.id.desc()).limit(1)).mappings().one()
    assert last["kind"] == "confidence" and last["alarm"] is False
    assert last["detail"] == {"reset": "tier small now serves models/v2"}
    # the new model's answers build their own baseline: the same confidences no longer alarm
    assert not any(r.alarm for r in monitor.process([_Item("w", confidence=float(c)) for c in rng.beta(2, 2, 60)]))


def test_made_up_workload_names_do_not_grow_the_monitor_without_bound(tmp_path: Path) -> None:
    """Every workload name a caller sent got detectors and alert series: 3,000 names held 26 MB more. Configured
    workloads are always watched; of the others the first 50, as in the gateway's metrics."""
    engine = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    config = parse_config({"tiers": {"small": {"kind": "local_lm"}}, "workloads": {"triage": {"tier": "small"}}})
    gateway = SimpleNamespace(engine=engine, config=config, metrics=Metrics(config.workloads))  # as Gateway does
    monitor = Monitor(gateway, MonitorConfig(workloads={"late": {}}))

    def record(workload: str) -> dict:
        return {"workload": workload, "role": "primary", "tier": "small", "status": "ok", "answer": "x",
                "messages": [{"role": "user", "content": "hi"}]}

    async def send() -> None:  # the observer hooks run on the gateway's event loop
        for i in range(300):
            monitor.on_record(record(f"made-up-{i}"))
        monitor.on_record(record("triage"))
        monitor.on_record(record("late"))
        await monitor.close()

    asyncio.run(send())
    assert len(monitor.workloads) == 52 and {"triage", "late"} <= set(monitor.workloads)
