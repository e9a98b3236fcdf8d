"""Scoring routers on held-out data: trained routers on outcomes, the boundary on a labelled set with
out-of-scope examples, the cascade's keep/escalate trade-off on a labelled set.

    model = load_router_model("routers/triage")                      # learned or boundary, by router.json
    report = evaluate_on_outcomes(model, read_outcomes("test.jsonl"))  # curve, AIQ, APGR, CPT; random, oracle
    boundary_report(boundary_model, texts, gold, oos_label="oos")     # in-scope accuracy, OOS recall, AUROC
    cascade_report(confidence, correct, target_accuracy=0.99)         # kept share at 99% accuracy, the curve
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tiergate.errors import ConfigError
from tiergate.evaluate.metrics import wilson_interval
from tiergate.routing.calibration import (
    compare_routers,
    selective_curve,
    threshold_for_quality,
    threshold_for_selective_accuracy,
    threshold_for_share,
)
from tiergate.routing.learned import read_router_info
from tiergate.routing.outcomes import Outcomes


def load_router_model(path: str | Path) -> Any:
    """A trained router (its `.escalation_scores(texts)` and `.threshold`) from its directory."""
    info = read_router_info(Path(path))
    if info.get("kind") == "learned":
        from tiergate.routing.learned import LearnedRouterModel

        return LearnedRouterModel.load(path)
    if info.get("kind") == "boundary":
        from tiergate.routing.boundary import BoundaryModel

        return BoundaryModel.load(path)
    raise ConfigError(f"{path}: unknown router kind {info.get('kind')!r}")


def _tiers(model: Any, outcomes: Outcomes, small: str | None, large: str | None) -> tuple[str, str]:
    small = small or (getattr(model, "small", None) if getattr(model, "small", None) in outcomes.tiers else None)
    large = large or (getattr(model, "large", None) if getattr(model, "large", None) in outcomes.tiers else None)
    return outcomes.order_tiers(small, large)


def evaluate_on_outcomes(model: Any, outcomes: Outcomes, *, small: str | None = None, large: str | None = None,
                         threshold: float | None = None) -> dict[str, Any]:
    """The router's cost-quality curve on `outcomes` with AIQ, APGR, CPT(50%), CPT(80%), beside a random router
    and the oracle, and its operating point at its threshold."""
    small, large = _tiers(model, outcomes, small, large)
    scores = model.escalation_scores(outcomes.prompts)
    costs = (outcomes.costs(small), outcomes.costs(large)) if outcomes.has_costs() else (None, None)
    thr = threshold if threshold is not None else float(model.threshold)
    report = compare_routers(scores, outcomes.scores(small), outcomes.scores(large), *costs, threshold=thr)
    report.update(kind=model.kind, small=small, large=large, outcomes=outcomes.path)
    return report


def calibrate_on_outcomes(model: Any, outcomes: Outcomes, *, target_large_share: float | None = None,
                          quality_floor: float | None = None, small: str | None = None,
                          large: str | None = None) -> dict[str, Any]:
    """A threshold for the router on validation outcomes: a target share of large-tier traffic, or the cheapest
    point reaching `quality_floor` times the large tier's quality."""
    if (target_large_share is None) == (quality_floor is None):
        raise ConfigError("give one of target_large_share and quality_floor")
    small, large = _tiers(model, outcomes, small, large)
    scores = model.escalation_scores(outcomes.prompts)
    s, lg = outcomes.scores(small), outcomes.scores(large)
    costs = (outcomes.costs(small), outcomes.costs(large)) if outcomes.has_costs() else (None, None)
    if target_large_share is not None:
        thr = threshold_for_share(scores, target_large_share)
    else:
        assert quality_floor is not None
        thr, _ = threshold_for_quality(scores, s, lg, quality_floor, *costs)
    from tiergate.routing.calibration import operating_point

    point = operating_point(scores, s, lg, *costs, thr)
    return {"threshold": thr, "target_large_share": target_large_share, "quality_floor": quality_floor,
            "validation": point, "small": small, "large": large, "outcomes": outcomes.path}


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[neg, pos])
    return float((ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


def boundary_report(model: Any, texts: list[str], gold: list[str], *, oos_label: str = "oos",
                    threshold: float | None = None, curve_points: int = 101) -> dict[str, Any]:
    """In-scope accuracy (Larson et al. 2019: an in-scope request escalated counts as wrong for the small
    model), OOS recall, AUROC per signal, and the trade-off over thresholds; each share with its 95% Wilson
    interval (`*_ci95`: 100 out-of-scope examples pin a recall of 96% only to about 90-98%)."""
    enc = model.encode(texts)
    sig = model.signals(enc)
    scores = model.combine(sig)
    thr = float(model.threshold if threshold is None else threshold)
    oos = np.array([g == oos_label for g in gold])
    if oos.all() or not oos.any():
        raise ConfigError(f"the labelled set needs both in-scope and out-of-scope ({oos_label!r}) examples")
    out: dict[str, Any] = {"n": len(texts), "in_scope_n": int((~oos).sum()), "oos_n": int(oos.sum()),
                           "threshold": thr}
    esc = scores > thr
    n_in, n_oos = int((~oos).sum()), int(oos.sum())
    out["oos_recall"] = float(esc[oos].mean())
    out["oos_recall_ci95"] = list(wilson_interval(int(esc[oos].sum()), n_oos, 0.975))
    out["in_scope_kept"] = float((~esc[~oos]).mean())
    out["in_scope_kept_ci95"] = list(wilson_interval(int((~esc[~oos]).sum()), n_in, 0.975))
    out["auroc"] = _auroc(scores[~oos], scores[oos])
    out["auroc_by_signal"] = {k: _auroc(v[~oos], v[oos]) for k, v in sig.items()}
    tpr95 = float(np.quantile(scores[~oos], 0.95))
    out["fpr_at_95_in_scope"] = float((scores[oos] <= tpr95).mean())
    correct = None
    if enc.logits is not None:
        labels = model.labels()
        pred = [labels[i] for i in enc.logits.argmax(1)]
        correct = np.array([p == g for p, g in zip(pred, gold, strict=True)])
        keep_in = ~esc & ~oos
        out["classifier_accuracy_in_scope"] = float(correct[~oos].mean())
        out["in_scope_accuracy"] = float((correct & keep_in)[~oos].sum() / (~oos).sum())
        out["in_scope_accuracy_ci95"] = list(wilson_interval(int((correct & keep_in)[~oos].sum()), n_in, 0.975))
        out["accuracy_on_kept_in_scope"] = float(correct[keep_in].mean()) if keep_in.any() else None
        out["accuracy_on_kept_all"] = float(correct[~esc].mean()) if (~esc).any() else None
    curve = []
    for t in np.quantile(scores, np.linspace(0.0, 1.0, curve_points)):
        e = scores > t
        point = {"threshold": float(t), "oos_recall": float(e[oos].mean()), "in_scope_kept": float((~e[~oos]).mean())}
        if correct is not None:
            point["in_scope_accuracy"] = float((correct & ~e & ~oos)[~oos].sum() / (~oos).sum())
        curve.append(point)
    out["curve"] = curve
    return out


def cascade_report(confidence: Any, correct: Any, *, target_accuracy: float | None = None,
                   threshold: float | None = None, curve_points: int = 201) -> dict[str, Any]:
    """The keep/escalate trade-off of a cascade on labelled data: at `threshold` (or the best one for
    `target_accuracy` on this data), the share the small tier keeps and its accuracy on what it keeps."""
    c, ok = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    curve = selective_curve(c, ok)
    out: dict[str, Any] = {"n": len(c), "accuracy_all": float(ok.mean())}
    if target_accuracy is not None:
        best_thr, best = threshold_for_selective_accuracy(c, ok, target_accuracy)
        out["best_on_this_data"] = {"target_accuracy": target_accuracy, **best, "threshold": best_thr}
    if threshold is not None:
        kept = c >= threshold
        out["at_threshold"] = {"threshold": threshold, "kept_share": float(kept.mean()),
                               "accuracy_kept": float(ok[kept].mean()) if kept.any() else None,
                               "escalated_share": float((~kept).mean())}
    # area under the risk-coverage curve (lower is better)
    cov = np.array([p["kept_share"] for p in curve])
    risk = 1.0 - np.array([p["accuracy_kept"] for p in curve])
    out["aurc"] = float(np.sum(np.diff(np.r_[0.0, cov]) * risk))
    step = max(1, len(curve) // curve_points)
    out["curve"] = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    return out
