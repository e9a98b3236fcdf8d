"""Several gateway processes on one database: compare-and-set transitions (one winner per version), and two
real gateway processes on PostgreSQL that agree on the stage as the gates and an operator move it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tiergate.rollout.state import RolloutStore, default_stages
from tiergate.store.db import open_store
from tiergate.testing.stub_process import start_stub

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {f"q{i}": ("billing" if i % 2 else "technical") for i in range(300)}


def test_concurrent_transitions_have_one_winner(store_url: str) -> None:
    engine = open_store(store_url)
    try:
        store = RolloutStore(engine)
        state = store.ensure("w", primary="a", candidate="b", stages=default_stages([10, 50]))
        results: list[Any] = []
        barrier = threading.Barrier(8)

        def go() -> None:
            barrier.wait()
            results.append(store.transition("w", "canary-10", expect_version=state.version, reason="race",
                                            actor="test"))

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1
        assert store.require("w").version == state.version + 1
        assert [e["to_stage"] for e in store.history("w")] == ["shadow", "canary-10"]
        # idempotent table creation: the migration function may run again (as the gateway's migration does)
        RolloutStore(engine)
        assert store.ensure("w", primary="a", candidate="b", stages=default_stages([10, 50])).stage == "canary-10"
    finally:
        engine.dispose()


def test_migration_runs_through_the_store_migrations_and_is_idempotent(store_url: str) -> None:
    from sqlalchemy import inspect

    from tiergate.rollout.migrations import m_rollouts_and_monitor
    from tiergate.store import migrations

    registered = any(fn is m_rollouts_and_monitor for _, fn in migrations.MIGRATIONS)
    if not registered:  # until the gateway lists it: register it the way it will be
        migrations.MIGRATIONS.append(("m999_rollouts_and_monitor_test", m_rollouts_and_monitor))
    try:
        engine = open_store(store_url)
        try:
            names = set(inspect(engine).get_table_names())
            assert {"rollouts", "rollout_events", "monitor_checks"} <= names
            RolloutStore(engine).ensure("w", primary="a", candidate="b", stages=default_stages([10]))
            with engine.begin() as conn:  # again, over existing tables and rows
                m_rollouts_and_monitor(conn)
            assert RolloutStore(engine).require("w").stages == ["shadow", "canary-10", "full"]
        finally:
            engine.dispose()
    finally:
        if not registered:
            migrations.MIGRATIONS.pop()


class Proc:
    def __init__(self, cfg_path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tiergate.rollout.serve", str(cfg_path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"LISTENING ") or not line:
                break
        if not line.startswith(b"LISTENING "):
            self.stop()
            raise RuntimeError(f"gateway process did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def ask(self, text: str) -> httpx.Response:
        r = self.client.post("/v1/chat/completions", headers={"X-Tiergate-Workload": "triage"},
                             json={"model": "auto", "messages": [{"role": "user", "content": text}]})
        r.raise_for_status()
        return r

    def stage(self) -> str:
        r = self.client.get("/admin/rollouts/triage?view=routing", headers={"Authorization": "Bearer adm"})
        r.raise_for_status()
        return str(r.json()["stage"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def two_gateways(cfg_path: Path) -> Iterator[tuple[Proc, Proc]]:
    a = Proc(cfg_path)
    try:
        b = Proc(cfg_path)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def _agree(a: Proc, b: Proc, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        sa, sb = a.stage(), b.stage()
        if sa == sb or time.monotonic() > deadline:
            return sa if sa == sb else f"{sa} != {sb}"
        time.sleep(0.05)


@pytest.mark.postgres
def test_two_gateway_processes_on_postgres_agree_on_the_stage(pg_url: str, tmp_path: Path) -> None:
    with start_stub(model="frontier", answers=ANSWERS) as frontier, start_stub(model="small", answers=ANSWERS) as small:
        cfg = {
            "auth": {"require_key": False, "admin_token": "adm"},
            "store": {"url": pg_url, "flush_interval_ms": 1, "spill_path": str(tmp_path / "spill.jsonl")},
            "tiers": {"frontier": {"kind": "upstream", "base_url": frontier.base_url},
                      "small": {"kind": "upstream", "base_url": small.base_url, "zone": "on_prem"}},
            "workloads": {"triage": {"task": "classification", "policy": [{
                "kind": "rollout", "primary": "frontier", "candidate": "small", "canary": [10, 50],
                "shadow_fraction": 1.0, "verify_fraction": 1.0, "refresh_s": 0.2,
                "gates": {"min_compared": 20, "agreement": 0.85, "rollback_min_compared": 10}}]}},
        }
        path = tmp_path / "tiergate.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with two_gateways(path) as (a, b):
            assert a.stage() == b.stage() == "shadow"
            seen = ["shadow"]
            for i in range(240):
                (a if i % 2 else b).ask(f"q{i}")
                if i % 10 == 9:
                    time.sleep(0.3)  # let shadows land and the other process refresh
                    now = _agree(a, b)
                    assert " != " not in now, f"processes disagree after {i + 1} requests: {now}"
                    if now != seen[-1]:
                        seen.append(now)
                    if now == "full":
                        break
            assert seen == ["shadow", "canary-10", "canary-50", "full"], seen
            # an operator rolls back on one process; the other follows within refresh_s
            r = a.client.post("/admin/rollouts/triage/rollback", headers={"Authorization": "Bearer adm"},
                              json={"reason": "operator drill"})
            assert r.status_code == 200 and r.json()["stage"] == "rolled_back"
            deadline = time.monotonic() + 3
            while b.ask("q1").headers["x-tiergate-route-reason"] != "rollout:rolled_back":
                assert time.monotonic() < deadline, "process B did not adopt the rollback"
                time.sleep(0.05)
        engine = open_store(pg_url)
        try:
            events = RolloutStore(engine).history("triage")
        finally:
            engine.dispose()
        assert [(e["from_stage"], e["to_stage"]) for e in events] == [
            (None, "shadow"), ("shadow", "canary-10"), ("canary-10", "canary-50"), ("canary-50", "full"),
            ("full", "rolled_back")]
        assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
        assert events[-1]["actor"] == "admin" and events[-1]["reason"] == "operator drill"
