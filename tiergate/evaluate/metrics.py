"""Metrics, with a registry: each metric names the tasks it scores and returns one or more named values.

    register_metric("brevity", ("generation",), lambda s: {"brevity": mean_len(s.preds)})
    compute_metrics(scored)        # every metric registered for scored.task (and for "*"), merged

Built-ins (registered at the bottom of this module):
- classification: `accuracy`, `macro_f1` (+ `per_label`), `confusion_matrix`, `ece` (when the tier gives
  confidences). Answers are matched to labels after trimming whitespace, quotes and a final period, and
  case-folding; an answer that is no label (or a failed request) is `<invalid>`: wrong, and a miss for the
  gold label's recall. Macro-F1 averages over the dataset's label set.
- extraction: `json_valid`, `field_precision` / `field_recall` / `field_f1` (+ `per_field`), `exact_match`,
  `span_precision` / `span_recall` / `span_f1` (+ `per_field_span`: values compared exactly as written).
- generation: `rouge_l`, `embedding_similarity` (bundled MiniLM unless `options["embedding_model"]`).
- every task: `latency_ms_p50`, `latency_ms_p95`, `latency_ms_mean`, `throughput_rps`, `cost_per_1k_usd`,
  `errors`, `error_rate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score bounds of a binomial proportion, each a one-sided bound at `confidence`:
    P(true rate < lower) <= 1 - confidence, and likewise above `upper`. (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Scored:
    """Everything metrics see: gold outputs and a tier's answers, in dataset order."""

    task: str
    golds: list[Any]
    preds: list[str | None]
    """The answer text; None where the request failed."""
    confidences: list[float | None] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    costs_usd: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: list[str | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """The label set (classification); answers outside it count as wrong."""
    options: dict[str, Any] = field(default_factory=dict)


MetricFn = Callable[[Scored], dict[str, Any]]


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    fn: MetricFn


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, tasks: Sequence[str], fn: MetricFn) -> None:
    """Register a metric for some tasks ("*" for all); a later registration under the same name replaces it."""
    _METRICS[name] = Metric(name, tuple(tasks), fn)


def unregister_metric(name: str) -> None:
    _METRICS.pop(name, None)


def metric_names(task: str | None = None) -> list[str]:
    return [m.name for m in _METRICS.values() if task is None or task in m.tasks or "*" in m.tasks]


def compute_metrics(scored: Scored, names: Sequence[str] | None = None) -> dict[str, Any]:
    chosen = names if names is not None else metric_names(scored.task)
    out: dict[str, Any] = {}
    for name in chosen:
        out.update(_METRICS[name].fn(scored))
    return out


# -- classification -------------------------------------------------------------------------------------------

def accuracy_score(golds: Sequence[Any], preds: Sequence[Any]) -> float:
    if not golds:
        return 0.0
    return sum(g == p for g, p in zip(golds, preds, strict=True)) / len(golds)


def per_label_prf(golds: Sequence[Any], preds: Sequence[Any],
                  labels: Sequence[Any] | None = None) -> dict[Any, dict[str, float]]:
    """Precision, recall, F1 and support per label; over `labels` when given (answers outside them count only
    as misses of the gold label), else over the labels in golds or preds. 0/0 counts as 0."""
    names = list(labels) if labels is not None else sorted(set(golds) | set(preds), key=str)
    out = {}
    for label in names:
        tp = sum(g == label and p == label for g, p in zip(golds, preds, strict=True))
        fp = sum(g != label and p == label for g, p in zip(golds, preds, strict=True))
        fn = sum(g == label and p != label for g, p in zip(golds, preds, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return out


def macro_f1_score(golds: Sequence[Any], preds: Sequence[Any], labels: Sequence[Any] | None = None) -> float:
    table = per_label_prf(golds, preds, labels)
    return float(np.mean([v["f1"] for v in table.values()])) if table else 0.0


INVALID = "<invalid>"


def clean_label(answer: str) -> str:
    """An answer as a label: trimmed of whitespace, quotes and a final period ("Billing." -> "Billing")."""
    return answer.strip().strip("\"'`").strip().rstrip(".").strip()


def match_label(answer: str | None, labels: Sequence[str]) -> str:
    """Map an answer to a label: exact, else cleaned (`clean_label`) and case-folded; anything else (and a failed
    request) is INVALID."""
    if answer is None:
        return INVALID
    if answer in labels:
        return answer
    clean = clean_label(answer).casefold()
    for label in labels:
        if label.casefold() == clean:
            return label
    return INVALID


def _labels(s: Scored) -> list[str]:
    return list(s.labels) or sorted({str(g) for g in s.golds})


def _label_preds(s: Scored) -> tuple[list[str], list[str]]:
    labels = _labels(s)
    return [str(g) for g in s.golds], [match_label(p, labels) for p in s.preds]


def _accuracy(s: Scored) -> dict[str, Any]:
    golds, preds = _label_preds(s)
    return {"accuracy": accuracy_score(golds, preds)}


def _macro_f1(s: Scored) -> dict[str, Any]:
    golds, preds = _label_preds(s)
    table = per_label_prf(golds, preds, _labels(s))
    return {"macro_f1": float(np.mean([v["f1"] for v in table.values()])) if table else 0.0, "per_label": table}


def _confusion(s: Scored) -> dict[str, Any]:
    golds, preds = _label_preds(s)
    names = _labels(s) + ([INVALID] if INVALID in preds else [])
    index = {n: i for i, n in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for g, p in zip(golds, preds, strict=True):
        if g in index:
            matrix[index[g]][index[p]] += 1
    return {"confusion_matrix": {"labels": names, "matrix": matrix}}


def _ece(s: Scored) -> dict[str, Any]:
    from tiergate.train.calibration import expected_calibration_error

    golds, preds = _label_preds(s)
    pairs = [(c, g == p) for c, g, p in zip(s.confidences, golds, preds, strict=False) if c is not None]
    if not pairs:
        return {}
    return {"ece": expected_calibration_error([c for c, _ in pairs], [hit for _, hit in pairs])}


# -- every task -------------------------------------------------------------------------------------------------

def _latency(s: Scored) -> dict[str, Any]:
    lat = np.asarray(s.latencies_ms, dtype=np.float64)
    if not len(lat):
        return {}
    return {
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_mean": float(lat.mean()),
        "throughput_rps": len(lat) / s.wall_s if s.wall_s > 0 else None,
    }


def _cost(s: Scored) -> dict[str, Any]:
    return {"cost_per_1k_usd": float(np.mean(s.costs_usd)) * 1000 if s.costs_usd else None}


def _errors(s: Scored) -> dict[str, Any]:
    n_err = sum(e is not None for e in s.errors)
    return {"errors": n_err, "error_rate": n_err / len(s.golds) if s.golds else 0.0}


def register_builtin_metrics() -> None:
    from tiergate.evaluate import text_metrics as tm

    register_metric("accuracy", ("classification",), _accuracy)
    register_metric("macro_f1", ("classification",), _macro_f1)
    register_metric("confusion_matrix", ("classification",), _confusion)
    register_metric("ece", ("classification",), _ece)
    register_metric("json_valid", ("extraction",), tm.json_valid_metric)
    register_metric("field_f1", ("extraction",), tm.field_prf_metric)
    register_metric("span_f1", ("extraction",), tm.span_prf_metric)
    register_metric("exact_match", ("extraction",), tm.exact_match_metric)
    register_metric("rouge_l", ("generation",), tm.rouge_l_metric)
    register_metric("embedding_similarity", ("generation",), tm.embedding_similarity_metric)
    register_metric("latency", ("*",), _latency)
    register_metric("cost", ("*",), _cost)
    register_metric("errors", ("*",), _errors)


register_builtin_metrics()
