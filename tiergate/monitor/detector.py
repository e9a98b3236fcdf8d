"""One workload's drift detector: sliding windows of live traffic, tested every `step` observations.

    detector = DriftDetector(DetectorSettings(window=200, step=50, alpha=0.002), reference=ref,
                             label_counts=Counter(train_labels))
    for emb, label, conf in live:
        results = detector.add_input(emb) + detector.add_output(label, conf)
        for r in results:                 # CheckResult(kind="input", n=200, statistic=..., p_value=..., alarm=...)
            ...

Checks (each on its own window and step counter; a check runs once its window is full):
- `input`: MMD permutation test of input embeddings against the reference (`EmbeddingReference`);
- `label`: chi-square of the small model's labels against the reference label shares;
- `confidence`: KS test of the small model's confidences against a baseline (given, or else the first full
  window of live confidences, frozen);
- `quality`: agreement with the frontier tier on shadow or verified pairs; alarms when the Wilson upper bound
  falls below `quality_threshold` (the small model is worse with that confidence);
- `hallucination`: share of answers flagged by hallucination checks; alarms when the Wilson lower bound
  exceeds `max_hallucination_rate`.
The same class drives the gateway's monitor and the CLINC150 drift benchmark.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiergate.evaluate.metrics import wilson_interval
from tiergate.monitor.drift import EmbeddingReference, confidence_drift_pvalue, label_drift_pvalue


@dataclass(frozen=True)
class DetectorSettings:
    window: int = 200
    step: int = 50
    alpha: float = 0.002
    consecutive: int = 1
    """windows in a row under `alpha` before a p-value check alarms"""
    permutations: int = 1000
    quality_threshold: float = 0.9
    max_hallucination_rate: float = 0.02
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class CheckResult:
    kind: str
    n: int
    statistic: float | None
    p_value: float | None
    alarm: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "statistic": self.statistic, "p_value": self.p_value,
                "alarm": self.alarm, "detail": self.detail}


class _Stream:
    def __init__(self, window: int) -> None:
        self.items: deque[Any] = deque(maxlen=window)
        self.since = 0

    def add(self, item: Any, step: int) -> bool:
        """Append; True when the window is full and `step` items arrived since the last test."""
        self.items.append(item)
        self.since += 1
        if len(self.items) == self.items.maxlen and self.since >= step:
            self.since = 0
            return True
        return False


class DriftDetector:
    def __init__(self, settings: DetectorSettings, *, reference: EmbeddingReference | None = None,
                 label_counts: Counter[str] | dict[str, int] | None = None,
                 baseline_confidences: Sequence[float] | None = None) -> None:
        self.s = settings
        self.reference = reference
        self.label_counts = Counter(label_counts) if label_counts else None
        self.baseline = list(baseline_confidences) if baseline_confidences else None
        self._given_baseline = self.baseline is not None
        w = settings.window
        self.inputs, self.labels, self.confs = _Stream(w), _Stream(w), _Stream(w)
        self.quality, self.flags = _Stream(w), _Stream(w)
        self.tests = 0
        self.last: dict[str, CheckResult] = {}
        self._streak: dict[str, int] = {}

    def _done(self, result: CheckResult) -> list[CheckResult]:
        self.last[result.kind] = result
        return [result]

    def _pvalue(self, kind: str, n: int, stat: float, p: float, detail: dict[str, Any] | None = None
                ) -> list[CheckResult]:
        streak = self._streak.get(kind, 0) + 1 if p <= self.s.alpha else 0
        self._streak[kind] = streak
        return self._done(CheckResult(kind, n, stat, p, streak >= self.s.consecutive, detail or {}))

    def add_input(self, embedding: np.ndarray) -> list[CheckResult]:
        if self.reference is None or not self.inputs.add(np.asarray(embedding, dtype=np.float32), self.s.step):
            return []
        self.tests += 1
        stat, p = self.reference.mmd_test(np.stack(list(self.inputs.items)), self.s.permutations,
                                          seed=self.s.seed + self.tests)
        return self._pvalue("input", len(self.inputs.items), stat, p)

    def add_output(self, label: str | None, confidence: float | None) -> list[CheckResult]:
        out: list[CheckResult] = []
        if label is not None and self.label_counts and self.labels.add(label, self.s.step):
            stat, p = label_drift_pvalue(self.label_counts, list(self.labels.items))
            top = Counter(self.labels.items).most_common(3)
            out += self._pvalue("label", len(self.labels.items), stat, p, {"top": top})
        if confidence is not None:
            if self.baseline is None:
                self._fill_baseline(confidence)
            elif self.confs.add(float(confidence), self.s.step):
                stat, p = confidence_drift_pvalue(self.baseline, list(self.confs.items))
                mean = float(np.mean(list(self.confs.items)))
                out += self._pvalue("confidence", len(self.confs.items), stat, p,
                                    {"mean": mean, "baseline_mean": float(np.mean(self.baseline))})
        return out

    def _fill_baseline(self, confidence: float) -> None:
        pending: list[float] = getattr(self, "_pending_baseline", [])
        pending.append(float(confidence))
        self._pending_baseline = pending
        if len(pending) >= self.s.window:
            self.baseline = pending

    MODEL_CHECKS = ("label", "confidence", "quality", "hallucination")
    """Checks of the small model's answers (the input check watches the traffic, whatever model answers it)."""

    def reset_model(self) -> list[str]:
        """The small model was replaced (a retrained candidate): its answers' windows, the confidence baseline
        learnt from its first window (unless one was given) and their alarm streaks start afresh. Returns the
        checks that had results."""
        w = self.s.window
        self.labels, self.confs, self.quality, self.flags = _Stream(w), _Stream(w), _Stream(w), _Stream(w)
        if not self._given_baseline:
            self.baseline = None
        self._pending_baseline = []
        had = [k for k in self.MODEL_CHECKS if k in self.last]
        for kind in self.MODEL_CHECKS:
            self.last.pop(kind, None)
            self._streak.pop(kind, None)
        return had

    def add_quality(self, agree: bool) -> list[CheckResult]:
        if not self.quality.add(bool(agree), self.s.step):
            return []
        n, k = len(self.quality.items), sum(self.quality.items)
        lo, hi = wilson_interval(k, n, self.s.confidence)
        return self._done(CheckResult("quality", n, k / n, None, hi < self.s.quality_threshold,
                                      {"upper": hi, "lower": lo, "threshold": self.s.quality_threshold}))

    def add_checked(self, flagged: bool) -> list[CheckResult]:
        if not self.flags.add(bool(flagged), self.s.step):
            return []
        n, k = len(self.flags.items), sum(self.flags.items)
        lo, hi = wilson_interval(k, n, self.s.confidence)
        return self._done(CheckResult("hallucination", n, k / n, None, lo > self.s.max_hallucination_rate,
                                      {"lower": lo, "upper": hi, "limit": self.s.max_hallucination_rate}))
