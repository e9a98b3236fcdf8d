"""The sample `tiergate analyze` clusters beyond --max-requests: every n-th eligible request, whatever else the
store holds between them (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.analyze.discover import load_requests
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record


def _rec(i: int, role: str = "primary", parent: str | None = None, workload: str = "w") -> dict:
    rid = f"r{i}" if role == "primary" else f"s{i}"
    return {"request_id": rid, "created_at": 1_750_000_000.0 + i, "workload": workload, "tier": "frontier",
            "role": role, "status": "ok", "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.001,
            "answer": "ok", "parent_request_id": parent, "messages": [{"role": "user", "content": f"ticket {i}"}]}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The sample is a window function in SQL: SQLite and PostgreSQL (skipped when no server is reachable)."""
    return f"sqlite:///{tmp_path / 'c.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_sample_counts_requests_not_record_ids(store_url: str) -> None:
    """Each request followed by its shadow (a rollout in shadow): requests hold every other record id, so a
    sample of "every 2nd id" took none of them (or all: the phase decides) and the command said too few."""
    engine = open_store(store_url)
    rows = []
    for i in range(40):
        rows += [_rec(i), _rec(i, "shadow", parent=f"r{i}")]
    insert_records(engine, [normalize_record(r) for r in rows])
    sample, eligible, without = load_requests(engine, max_requests=20)
    assert eligible == 40 and without == 0
    assert [r["request_id"] for r in sample] == [f"r{i}" for i in range(0, 40, 2)]
    # a step that does not divide: every 3rd, still spread over the whole window
    sample, _, _ = load_requests(engine, max_requests=15)
    assert [r["request_id"] for r in sample] == [f"r{i}" for i in range(0, 40, 3)]


def test_sample_is_spread_over_workloads_in_arrival_order(store_url: str) -> None:
    """Two workloads interleaved with a shadow after each `a` request: the sample keeps their 2:1 mix."""
    engine = open_store(store_url)
    rows = []
    for i in range(60):
        wl = "b" if i % 3 == 2 else "a"
        rows.append(_rec(i, workload=wl))
        if wl == "a":
            rows.append(_rec(i, "shadow", parent=f"r{i}", workload=wl))
    insert_records(engine, [normalize_record(r) for r in rows])
    sample, eligible, _ = load_requests(engine, max_requests=30)
    assert eligible == 60 and len(sample) == 30
    assert sum(r["workload"] == "b" for r in sample) == 10


def test_unknown_workload_is_named(tmp_path: Path) -> None:
    """`analyze -w typo` said "0 answered request(s) ... too few to analyse"; the spend report names it."""
    from tiergate.analyze.discover import analyze_store
    from tiergate.config import load_config
    from tiergate.errors import DataError

    engine = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    insert_records(engine, [normalize_record(_rec(i)) for i in range(3)])
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text('tiers:\n  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o}\n')
    with pytest.raises(DataError, match=r"--workload 'nosuch': no such workload: .* \(workloads: w\)"):
        analyze_store(engine, load_config(cfg), workload="nosuch", embed=lambda texts: None)  # type: ignore[arg-type,return-value]
