"""Learned router on outcomes produced here from two real tiers on BANKING77: a zero-shot general model (the
bundled MiniLM, no training: the label whose name is nearest the query) and the fine-tuned classifier.

    nice -n 10 .venv/bin/python benchmarks/learned_router.py [--data-dir ../shared/data] [--model DIR]

Both tiers answer every query of the validation carve (5% of train.csv, as benchmarks/banking77_cascade.py carves
it) and of test.csv; a query's score for a tier is 1 when its label is right, else 0. The router trains on the
validation outcomes plus one stratified half of the test outcomes, and is scored on the other half, which it
never saw: the cost-quality curve with AIQ, APGR, CPT(50%), CPT(80%), beside a random router and the oracle on
the same prompts, plus the router's operating point (threshold chosen on out-of-fold predictions for 95% of the
large tier's quality). Both tiers run the same encoder size on this CPU, so the cost axis is the share of calls
to the large (fine-tuned) tier, as in RouteLLM. For context, the same measures for routing on the small tier's
own confidence (its top cosine similarity), which needs the small tier to run first.
Outcomes files go to --work (they hold the dataset's text: not under results/). Saves
benchmarks/results/learned_router.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--model", default=str(REPO / "benchmarks" / "models" / "banking77"))
    p.add_argument("--work", default=str(REPO / "benchmarks" / "models" / "learned_router"))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--router-model", choices=["auto", "logreg", "mlp"], default="auto",
                   help="auto: logistic regression or MLP, whichever has the better cross-validated AUC on the "
                        "router's training outcomes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import numpy as np
    from _common import data_dir  # type: ignore[import-not-found]
    from banking77_cascade import splits  # type: ignore[import-not-found]
    from banking77_classifier import RECIPE  # type: ignore[import-not-found]

    from tiergate.routing.calibration import compare_routers
    from tiergate.routing.embeddings import Embedder
    from tiergate.routing.evaluation import evaluate_on_outcomes
    from tiergate.routing.learned import LearnedTrainOptions, train_learned_router
    from tiergate.routing.outcomes import Outcome, Outcomes, read_outcomes, write_outcomes
    from tiergate.train.classifier_model import ClassifierPredictor
    from tiergate.train.manifest import is_model_dir

    if not is_model_dir(args.model):
        raise SystemExit(f"{args.model}: no trained classifier; run benchmarks/banking77_cascade.py first (it trains one)")
    train, val, test = splits(data_dir(args.data_dir) / "banking77", float(RECIPE["val_fraction"]), int(RECIPE["seed"]))
    labels = train.labels()

    t0 = time.perf_counter()
    emb = Embedder(cache_size=0)
    label_vecs = emb.encode([lab.replace("_", " ") for lab in labels])
    predictor = ClassifierPredictor.load(args.model, "cpu")

    def tiers(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sims = emb.encode(ds.texts) @ label_vecs.T
        zero = np.array([labels[i] == str(o) for i, o in zip(sims.argmax(1), ds.outputs, strict=True)], float)
        probs = predictor.predict_proba(ds.texts)
        tuned = np.array([predictor.labels[i] == str(o) for i, o in zip(probs.argmax(1), ds.outputs, strict=True)], float)
        return zero, tuned, sims.max(1)

    v_zero, v_tuned, _ = tiers(val)
    t_zero, t_tuned, t_conf = tiers(test)
    outcomes_s = time.perf_counter() - t0

    # stratified halves of the test set: the router trains on one (with validation), is scored on the other
    rng = np.random.default_rng(args.seed)
    by_label: dict[str, list[int]] = {}
    for i, o in enumerate(test.outputs):
        by_label.setdefault(str(o), []).append(i)
    held = []
    for idx in by_label.values():
        idx = list(rng.permutation(idx))
        held += idx[: len(idx) // 2]
    held_set = set(held)
    fit_idx = [i for i in range(len(test)) if i not in held_set]

    def rows(ds: Any, idx: list[int], zero: np.ndarray, tuned: np.ndarray) -> list[Outcome]:
        return [Outcome(ds.texts[i], {"zero_shot": float(zero[i]), "fine_tuned": float(tuned[i])}) for i in idx]

    work = Path(args.work)
    fit_oc = Outcomes(rows(val, list(range(len(val))), v_zero, v_tuned) + rows(test, fit_idx, t_zero, t_tuned),
                      ["zero_shot", "fine_tuned"])
    eval_oc = Outcomes(rows(test, sorted(held), t_zero, t_tuned), ["zero_shot", "fine_tuned"])
    write_outcomes(fit_oc, work / "outcomes_train.jsonl")
    write_outcomes(eval_oc, work / "outcomes_test.jsonl")
    fit_oc, eval_oc = read_outcomes(work / "outcomes_train.jsonl"), read_outcomes(work / "outcomes_test.jsonl")

    t0 = time.perf_counter()
    model = train_learned_router(fit_oc, LearnedTrainOptions(model=args.router_model, quality_floor=0.95,
                                                             seed=args.seed),
                                 small="zero_shot", large="fine_tuned")
    train_s = time.perf_counter() - t0
    model.save(work / "router")
    report = evaluate_on_outcomes(model, eval_oc)
    held_sorted = sorted(held)
    confidence_router = compare_routers(-t_conf[held_sorted], t_zero[held_sorted], t_tuned[held_sorted])

    result = {
        "benchmark": "learned_router", "data": "banking77 (validation carve + test.csv)",
        "tiers": {"zero_shot": "bundled all-MiniLM-L6-v2, nearest label name (no training)",
                  "fine_tuned": f"classifier {args.model}"},
        "quality": {"zero_shot_val": float(v_zero.mean()), "fine_tuned_val": float(v_tuned.mean()),
                    "zero_shot_test": float(t_zero.mean()), "fine_tuned_test": float(t_tuned.mean())},
        "router_train_n": len(fit_oc), "router_eval_n": len(eval_oc),
        "eval": {k: report[k] for k in ("router", "random", "oracle", "operating_point", "all_small", "all_large",
                                        "oracle_best", "axis")},
        "cross_validated_on_train": {k: model.meta["cv"][k] for k in ("router", "random", "oracle")},
        "cv_auc": model.meta["cv_auc"], "C": model.meta["C"], "model": model.meta["model"],
        "cv_auc_by_model_C": model.meta["cv_auc_by_model_C"], "threshold": model.threshold,
        "context_small_confidence_router": {k: confidence_router[k] for k in ("router", "random", "oracle")},
        "curves": report["curves"],
        "timing_s": {"outcomes": round(outcomes_s, 1), "router_training": round(train_s, 1)},
        "router_options": model.options.model_dump(),
        "cli": [f"tiergate router train learned --outcomes {work / 'outcomes_train.jsonl'} --out {work / 'router'} "
                f"--small zero_shot --large fine_tuned",
                f"tiergate router eval --router {work / 'router'} --outcomes {work / 'outcomes_test.jsonl'} "
                "--json report.json --html report.html"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learned_router.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: result[k] for k in ("quality", "eval", "cv_auc", "context_small_confidence_router")},
                     indent=2, default=float))
    print(f"saved {out / 'learned_router.json'}")


if __name__ == "__main__":
    main()
