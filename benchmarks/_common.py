"""Shared driver for the classifier benchmarks: train with a recipe, score the test set through the classifier
tier with the evaluation harness, print and save JSON (metric, wall-clock training time, peak memory)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def data_dir(arg: str) -> Path:
    """--data-dir as given (relative to the working directory), else relative to the repository's parent."""
    for candidate in (Path(arg), REPO / arg):
        if candidate.is_dir():
            return candidate.resolve()
    raise SystemExit(f"data directory {arg!r} not found (pass --data-dir)")


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default="../shared/data", help="holds banking77/ and clinc150/ (default ../shared/data)")
    p.add_argument("--out", default=default_out, help="model artifact directory")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"), help="where JSON/Markdown/HTML go")
    p.add_argument("--tag", default="", help="suffix for the result file names (recipe experiments)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe option")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N examples only (smoke runs)")
    p.add_argument("--limit-test", type=int, default=None, help="score the first N test examples only")
    p.add_argument("--reuse", action="store_true", help="skip training when --out already holds a model")
    return p


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """CPU time (user + system) of this process: with other jobs on the machine, wall time overstates what
    the training needs; cpu_s / cores is what it would take alone with perfect parallelism."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(name: str, args: argparse.Namespace, recipe: dict[str, Any], train_ds: Any, eval_ds: Any, test_ds: Any,
        target: float, published: dict[str, Any], extra: Any = None) -> dict[str, Any]:
    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier, write_reports
    from tiergate.train import get_trainer
    from tiergate.train.manifest import is_model_dir

    trainer = get_trainer("classifier")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    config = trainer.make_config({**recipe, **overrides})
    if args.limit_train:
        train_ds = train_ds.subset(range(min(args.limit_train, len(train_ds))))
    load_before = os.getloadavg()
    train_wall = train_cpu = None
    if not (args.reuse and is_model_dir(args.out)):
        started, cpu0 = time.perf_counter(), cpu_seconds()
        model = trainer.train(train_ds, eval_ds, args.out, config)
        train_wall, train_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        train_metrics = model.metrics
    else:
        train_metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    peak_train = peak_rss_mb()
    load_after = os.getloadavg()
    if args.limit_test:
        test_ds = test_ds.subset(range(min(args.limit_test, len(test_ds))))
    report = evaluate_tier(resolve_tier(args.out, name=name), test_ds, EvalOptions(concurrency=32))
    m = report.metrics
    result: dict[str, Any] = {
        "benchmark": name, "metric": "accuracy", "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
        "ece": m.get("ece"), "target": target, "target_met": m["accuracy"] >= target,
        "test_n": report.n, "train_n": len(train_ds), "validation_n": train_metrics.get("eval_examples"),
        "train_wall_s": round(train_wall, 1) if train_wall is not None else None,
        "train_wall_min": round(train_wall / 60, 2) if train_wall is not None else None,
        "train_cpu_s": round(train_cpu, 1) if train_cpu is not None else None,
        "peak_rss_mb_training": round(peak_train, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "validation_accuracy": train_metrics.get("accuracy"), "temperature": train_metrics.get("temperature"),
        "ece_validation_uncalibrated": train_metrics.get("ece_uncalibrated"),
        "ece_validation_calibrated": train_metrics.get("ece"),
        "history": train_metrics.get("history"),
        "serving": {k: m.get(k) for k in ("latency_ms_p50", "latency_ms_p95", "throughput_rps")},
        "config": config.to_json(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": _threads(), "platform": platform.platform(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after_training": [round(x, 2) for x in load_after]},
        "published": published,
    }
    if extra is not None:
        result.update(extra(args.out))
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name + (f"-{args.tag}" if args.tag else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_reports([report], md_path=out_dir / f"{stem}.md", html_path=out_dir / f"{stem}.html",
                  title=f"{name} test set")
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "history", "published")}, indent=2))
    print(f"saved {out_dir / (stem + '.json')}")
    return result


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())
