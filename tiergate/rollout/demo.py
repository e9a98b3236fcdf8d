"""The cutover part of `make demo`: shadow, staged cutover, drift and an automatic rollback, the cost saved.

    python -m tiergate.rollout.demo [--out demo-out] [--data-dir ../shared/data] [--model DIR]
    cutover_demo(Path("demo-out"), console)          # from tiergate.demo

A frontier tier (a local OpenAI-compatible stub that answers CLINC150 intents correctly, priced as
gpt-4o-mini) serves the `intents` workload; a small classifier (trained here on three CLINC150 domains unless
--model is given) is rolled out: shadow -> canary 10% -> canary 50% -> full, advanced by the gates. Then live
traffic shifts: 40% of requests come from a domain the small model never saw. The monitor's input drift alarm
fires, the frontier's verification answers disagree, and the rollout rolls back by itself, the reason recorded.
Finally the spend report shows what the traffic cost against an all-frontier counterfactual.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

KNOWN = ["banking", "credit_cards", "travel"]
UNSEEN = "kitchen_and_dining"


def _clinc(data_dir: Path) -> tuple[dict[str, list[list[str]]], dict[str, list[str]]]:
    root = data_dir / "clinc150"
    if not (root / "data_full.json").is_file():
        raise SystemExit(f"CLINC150 not found under {data_dir} (pass --data-dir)")
    return json.loads((root / "data_full.json").read_text()), json.loads((root / "domains.json").read_text())


def _rows(data: dict[str, Any], domains: dict[str, list[str]], names: list[str], split: str, seed: int
          ) -> list[tuple[str, str]]:
    wanted = {i for d in names for i in domains[d]}
    rows = [(t, i) for t, i in data[split] if i in wanted]
    random.Random(seed).shuffle(rows)
    return rows


def _train(out: Path, rows: list[tuple[str, str]], console: Any) -> Path:
    from tiergate.data import Dataset, Example, write_jsonl
    from tiergate.train import get_trainer
    from tiergate.train.manifest import is_model_dir

    model_dir = out / "intents-model"
    write_jsonl(Dataset([Example(t, i) for t, i in rows], "classification"), out / "train.jsonl")
    if is_model_dir(model_dir):
        console.print(f"reusing the small model in {model_dir}")
        return model_dir
    console.print(f"training the small model on {len(rows)} queries of {', '.join(KNOWN)} (one epoch)…")
    t0 = time.perf_counter()
    trainer = get_trainer("classifier")
    trainer.train(Dataset([Example(t, i) for t, i in rows], "classification"), None, model_dir,
                  trainer.make_config({"epochs": 1, "progress": False, "eval_every_epoch": False}))
    console.print(f"trained in {time.perf_counter() - t0:.0f}s")
    return model_dir


def cutover_demo(out: Path, console: Any, *, data_dir: Path = Path("../shared/data"), model: Path | None = None,
                 per_intent: int = 30) -> dict[str, Any]:
    import httpx
    from rich.table import Table

    from tiergate.costs.report import spend_report
    from tiergate.monitor.config import MonitorConfig
    from tiergate.rollout.serve import with_rollout
    from tiergate.testing.gateway import run_gateway
    from tiergate.testing.stub_process import start_stub

    out.mkdir(parents=True, exist_ok=True)
    data, domains = _clinc(data_dir)
    counts: dict[str, int] = {}
    train = []
    for t, i in _rows(data, domains, KNOWN, "train", 0):
        if counts.get(i, 0) < per_intent:
            counts[i] = counts.get(i, 0) + 1
            train.append((t, i))
    model_dir = model or _train(out, train, console)
    if model is not None:
        from tiergate.data import Dataset, Example, write_jsonl

        write_jsonl(Dataset([Example(t, i) for t, i in train], "classification"), out / "train.jsonl")
    live = _rows(data, domains, KNOWN, "test", 1)
    unseen = _rows(data, domains, [UNSEEN], "test", 2)
    answers = {t: i for t, i in live + unseen}
    db = out / "cutover.db"
    db.unlink(missing_ok=True)
    monitor = MonitorConfig.model_validate({
        "window": 100, "step": 25, "alpha": 0.002, "permutations": 500, "reference_size": 300,
        "quality_threshold": 0.85,
        "workloads": {"intents": {"reference": str(out / "train.jsonl"), "tiers": ["small"]}}})
    result: dict[str, Any] = {}
    with start_stub(model="gpt-4o-mini", answers=answers, latency_ms=30) as frontier:
        cfg = {
            "auth": {"require_key": False},
            "store": {"url": f"sqlite:///{db}", "flush_interval_ms": 5, "spill_path": str(out / "spill.jsonl")},
            "tiers": {
                "frontier": {"kind": "upstream", "base_url": frontier.base_url, "model": "gpt-4o-mini",
                             "price": {"book": "gpt-4o-mini"}},
                "small": {"kind": "classifier", "model": str(model_dir),
                          "price": {"hourly_usd": 0.10, "throughput_rps": 50}},
            },
            "workloads": {"intents": {"task": "classification", "policy": [{
                "kind": "rollout", "primary": "frontier", "candidate": "small", "canary": [10, 50],
                "shadow_fraction": 1.0, "verify_fraction": 0.25, "refresh_s": 0.5,
                "gates": {"min_compared": 100, "agreement": 0.85, "confidence": 0.95,
                          "rollback_min_compared": 30, "max_error_rate": 0.02}}]}},
        }
        with run_gateway(cfg) as gw:
            app = with_rollout(gw.app, monitor)
            manager, mon = app.state.rollout, app.state.monitor
            _on_loop(gw, manager.start())
            client = httpx.Client(base_url=gw.url, timeout=60, trust_env=False)

            def ask(text: str) -> str:
                r = client.post("/v1/chat/completions", headers={"X-Tiergate-Workload": "intents"},
                                json={"model": "auto", "messages": [{"role": "user", "content": text}]})
                r.raise_for_status()
                return str(r.headers["x-tiergate-route-reason"])

            def new_table(title: str) -> Any:
                return Table("after request", "transition", "pairs", "agreement", "bound", "why", title=title)

            sent, stage, pool = 0, "shadow", ThreadPoolExecutor(4)
            table = new_table("shadow and staged cutover (gates: agreement >= 0.85 at 95% confidence)")

            def batch(rows: list[tuple[str, str]]) -> None:
                nonlocal sent, stage
                list(pool.map(lambda r: ask(r[0]), rows))
                sent += len(rows)
                now = manager.status()["intents"]["stage"]
                if now != stage:
                    event = manager.store.history("intents")[-1]
                    w = event["stats"] or {}
                    bound = w.get("agreement_upper") if now == "rolled_back" else w.get("agreement_lower")
                    why = (event["reason"] or "").split(":")[0]
                    table.add_row(str(sent), f"{stage} -> {now}", str(w.get("compared", "-")),
                                  _f(w.get("agreement")), _f(bound), why)
                    stage = now

            i = 0
            while stage != "full" and i < len(live):
                batch(live[i:i + 20])
                i += 20
            result["cutover_requests"] = sent
            console.print(table)
            console.print("[bold]drift:[/] 40% of traffic now comes from a domain the small model never saw "
                          f"({UNSEEN}); the frontier verifies 25% of the small model's answers")
            table = new_table("live traffic shifts")
            rng = random.Random(3)
            shifted = [unseen.pop() if rng.random() < 0.4 and unseen else live[(i + k) % len(live)]
                       for k in range(400)]
            drift_at = rollback_at = None
            for k in range(0, len(shifted), 20):
                batch(shifted[k:k + 20])
                _on_loop(gw, mon.close(), 120)
                alarming = mon.status()["workloads"].get("intents", {}).get("alarming", [])
                if drift_at is None and "input" in alarming:
                    drift_at = k + 20
                    table.add_row(str(sent), "input drift alarm", "", "", "", "MMD p-value "
                                  f"{mon.status()['workloads']['intents']['checks']['input']['p_value']:.4f}")
                if rollback_at is None and stage == "rolled_back":
                    rollback_at = k + 20
                if drift_at and rollback_at:
                    break
            console.print(table)
            checks = mon.status()["workloads"]["intents"]["checks"]
            alarm = (f"input drift alarm {drift_at} requests after the shift" if drift_at is not None
                     else "the input drift alarm had not fired yet (its window fills more slowly than the gates')")
            console.print(f"{alarm}; automatic rollback after {rollback_at} requests: "
                          f"{manager.store.history('intents')[-1]['reason']}")
            result.update(drift_alarm_after=drift_at, rolled_back_after=rollback_at, checks=checks)
        engine = _engine(db)
        try:
            report = spend_report(engine, _config(cfg))
            from tiergate.gateway.dashboard import collect, render

            (out / "dashboard.html").write_text(render(collect(engine, _config(cfg), since=0.0)), encoding="utf-8")
        finally:
            engine.dispose()
    base = report.get("baseline") or {}
    live_usd, shadow_usd = report["spend"]["cost_usd"], report["shadow"]["cost_usd"]
    frontier_usd = base.get("cost_usd") or 0.0
    per_request = {t: v["cost_usd"] / v["requests"] for t, v in report["spend"]["by_tier"].items()
                   if v["requests"] and v["cost_usd"] is not None}
    console.print(f"[bold]cost:[/] live traffic ${live_usd:.5f} + shadow calls ${shadow_usd:.5f} against "
                  f"${frontier_usd:.5f} had everything gone to the frontier: net saving "
                  f"${frontier_usd - live_usd - shadow_usd:.5f}, during a rollout that served the small model for "
                  f"a few hundred requests. Per request: "
                  + ", ".join(f"{t} ${c:.7f}" for t, c in sorted(per_request.items()))
                  + (f" ({1 - per_request['small'] / per_request['frontier']:.1%} less on the small model)"
                     if per_request.get("frontier") and "small" in per_request else ""))
    result["cost"] = {"live_usd": live_usd, "shadow_usd": shadow_usd, "all_frontier_usd": frontier_usd,
                      "net_saving_usd": frontier_usd - live_usd - shadow_usd, "per_request_usd": per_request}
    (out / "cutover.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"the dashboard of this traffic (what GET /dashboard serves live): {out / 'dashboard.html'}")
    return result


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _on_loop(gw: Any, coro: Any, timeout: float = 60) -> Any:
    import asyncio

    return asyncio.run_coroutine_threadsafe(coro, gw.gateway.writer._task.get_loop()).result(timeout)


def _engine(db: Path) -> Any:
    from tiergate.store.db import open_store

    return open_store(f"sqlite:///{db}")


def _config(cfg: dict[str, Any]) -> Any:
    from tiergate.config import parse_config

    return parse_config(cfg)


def main() -> None:
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-out")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--model", default=None, help="a trained classifier for the CLINC150 intents (else trained)")
    args = p.parse_args()
    cutover_demo(Path(args.out), Console(), data_dir=Path(args.data_dir),
                 model=Path(args.model) if args.model else None)


if __name__ == "__main__":
    main()
