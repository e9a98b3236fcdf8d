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
    p.add_argument("--zero-shot-n", type=int, default=100,
                   help="also score the bundled general model (SmolLM2) zero-shot beside the fine-tuned model on a "
                        "stratified sample of this many test queries (0: skip)")
    p.add_argument("--compare-only", action="store_true",
                   help="only (re)run the side-by-side comparison with the model in --out, adding it to the saved "
                        "result JSON")
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

    out_dir = Path(args.results)
    stem = name + (f"-{args.tag}" if args.tag else "")
    if args.compare_only:
        saved = json.loads((out_dir / f"{stem}.json").read_text())
        saved["zero_shot_comparison"] = compare_with_general(stem, args.out, test_ds, args.zero_shot_n, out_dir)
        (out_dir / f"{stem}.json").write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(saved["zero_shot_comparison"], indent=2))
        return saved
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
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.zero_shot_n:
        result["zero_shot_comparison"] = compare_with_general(stem, args.out, test_ds, args.zero_shot_n, out_dir)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_reports([report], md_path=out_dir / f"{stem}.md", html_path=out_dir / f"{stem}.html",
                  title=f"{name} test set")
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "history", "published")}, indent=2))
    print(f"saved {out_dir / (stem + '.json')}")
    return result


def stratified_sample(ds: Any, n: int, seed: int = 0) -> Any:
    """About `n` examples of `ds`, the same share of each label (at least one each), in a fixed order."""
    import random

    by_label: dict[str, list[int]] = {}
    for i, ex in enumerate(ds):
        by_label.setdefault(str(ex.output), []).append(i)
    rng = random.Random(seed)
    share = min(1.0, n / max(1, len(ds)))
    picked: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        picked += rng.sample(idx, max(1, round(len(idx) * share)))
    return ds.subset(sorted(rng.sample(picked, n)) if len(picked) > n else sorted(picked))


def compare_with_general(name: str, model_dir: str, test_ds: Any, n: int, out_dir: Path) -> dict[str, Any]:
    """The fine-tuned model and the bundled general model (SmolLM2-135M-Instruct, zero-shot, the label set in
    its prompt) on the same stratified sample of test queries, through the one harness; writes
    {name}-vs-general.{json,md,html} and returns the headline figures."""
    from tiergate.config import LocalLMTierConfig
    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier, write_reports
    from tiergate.tiers.local_lm import LocalLMTier

    sample = stratified_sample(test_ds, n)
    small = resolve_tier(model_dir, name=f"{name}-fine-tuned")
    general = LocalLMTier("smollm2-135m-zero-shot", LocalLMTierConfig(kind="local_lm", max_new_tokens=16))
    reports = [evaluate_tier(small, sample, EvalOptions(concurrency=32)),
               evaluate_tier(general, sample, EvalOptions(concurrency=8, max_tokens=16))]
    write_reports(reports, json_path=out_dir / f"{name}-vs-general.json", md_path=out_dir / f"{name}-vs-general.md",
                  html_path=out_dir / f"{name}-vs-general.html", title=f"{name}: fine-tuned vs general model zero-shot")
    keys = ("accuracy", "macro_f1", "latency_ms_p50", "latency_ms_p95", "throughput_rps")
    return {"n": len(sample), "sample": "stratified by label, seed 0",
            "tiers": {r.tier: {k: r.metrics.get(k) for k in keys} for r in reports},
            "report": f"benchmarks/results/{name}-vs-general.html"}


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())
