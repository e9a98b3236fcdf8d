"""Drift statistics, the detector's windows, gate statistics and hallucination checks (pure functions)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tiergate.monitor.detector import DetectorSettings, DriftDetector
from tiergate.monitor.drift import EmbeddingReference, confidence_drift_pvalue, label_drift_pvalue
from tiergate.monitor.hallucination import CheckSpec, check_answer, schema_errors, values_not_in_input
from tiergate.rollout.compare import compare_answers
from tiergate.rollout.gates import GateConfig, Observation, Window, evaluate, wilson_interval


def test_mmd_permutation_test_is_calibrated_and_powerful() -> None:
    rng = np.random.default_rng(0)
    ref = EmbeddingReference.fit(rng.normal(size=(2000, 8)), size=200, seed=0)
    null_p = [ref.mmd_test(rng.normal(size=(50, 8)), permutations=199, seed=i)[1] for i in range(100)]
    assert sum(p <= 0.05 for p in null_p) <= 12  # about 5 expected: the false-alarm rate is alpha
    shifted = rng.normal(size=(50, 8))
    shifted[:15] += 1.5  # 30% of the window from a shifted distribution
    stat, p = ref.mmd_test(shifted, permutations=199, seed=1)
    assert p <= 0.01 and stat > 0
    sims = ref.max_similarity(np.vstack([ref.sample[:3], -ref.sample[:3]]))
    assert np.allclose(sims[:3], 1.0, atol=1e-5) and (sims[3:] < 0.9).all()


def test_label_and_confidence_drift() -> None:
    ref = Counter({"a": 500, "b": 300, "c": 200, "rare": 3})
    same = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    assert label_drift_pvalue(ref, same)[1] > 0.5
    assert label_drift_pvalue(ref, ["a"] * 20 + ["c"] * 80)[1] < 1e-3
    assert label_drift_pvalue(ref, same + ["new"] * 10)[1] > 0.5  # unknown labels: hallucinations, not drift
    rng = np.random.default_rng(0)
    base = rng.beta(8, 2, 300)
    assert confidence_drift_pvalue(base, rng.beta(8, 2, 200))[1] > 0.01
    assert confidence_drift_pvalue(base, rng.beta(3, 3, 200))[1] < 1e-6


def test_detector_tests_full_windows_every_step() -> None:
    rng = np.random.default_rng(1)
    ref = EmbeddingReference.fit(rng.normal(size=(500, 4)), size=100)
    det = DriftDetector(DetectorSettings(window=40, step=10, permutations=99), reference=ref,
                        label_counts={"x": 1, "y": 1})
    ran = [len(det.add_input(rng.normal(size=4))) for _ in range(70)]
    assert [i + 1 for i, r in enumerate(ran) if r] == [40, 50, 60, 70]
    outs = [r for _ in range(80) for r in det.add_output("x", 0.9)]  # first 40 confidences: the baseline
    kinds = Counter(r.kind for r in outs)
    assert kinds["label"] == 5 and kinds["confidence"] == 1 and outs[-1].kind in ("label", "confidence")
    assert det.last["label"].alarm  # only "x": far from the 50/50 reference
    q = [r for _ in range(40) for r in det.add_quality(False)]
    assert q[-1].kind == "quality" and q[-1].alarm


def test_wilson_bounds_and_gate_verdicts() -> None:
    lo, hi = wilson_interval(30, 30, 0.95)
    assert 0.91 < lo < 0.92 and hi == pytest.approx(1.0)
    gates = GateConfig(min_compared=30, agreement=0.9, rollback_min_compared=10, max_error_rate=0.05)
    w = Window(100)
    for _ in range(29):
        w.add(Observation(agree=True, error=False, flagged=False))
    assert evaluate(w, gates).action is None
    w.add(Observation(agree=True, error=False, flagged=False))
    assert evaluate(w, gates).action == "advance"
    w.clear()
    for _ in range(10):
        w.add(Observation(agree=False))
    v = evaluate(w, gates)
    assert v.action == "rollback" and "upper bound" in v.reasons[0]
    w.clear()
    for i in range(40):
        w.add(Observation(agree=True, error=i % 4 == 0))
    v = evaluate(w, gates)
    assert v.action == "rollback" and "error rate" in v.reasons[0]
    lat = Window(100)
    for _ in range(25):
        lat.add(Observation(agree=True, latency_ms=500.0))
    assert evaluate(lat, GateConfig(min_compared=1, agreement=0.5, max_p95_latency_ms=200)).action == "rollback"
    w = Window(5)
    for i in range(8):
        w.add(Observation(agree=i < 4, flags=("schema:$.x: bad",)))
    assert w.stats()["compared"] == 5 and w.stats()["agreement"] == pytest.approx(0.2)
    assert w.stats()["flags"] == {"schema": 5}


@pytest.mark.parametrize("task, labels, a, b, score", [
    ("classification", ["billing", "technical"], "billing", " Billing.", 1.0),
    ("classification", ["billing", "technical"], "billing", "technical", 0.0),
    ("classification", None, "Yes", "yes", 1.0),
    ("extraction", None, '{"city": "Paris", "date": "May 2"}', '```json\n{"city": "paris"}\n```', 2 / 3),
    ("extraction", None, '{"city": null}', "{}", 1.0),
    ("extraction", None, '{"city": "Paris"}', "not json", 0.0),
    ("generation", None, "we received your refund request", "we received your refund request", 1.0),
])
def test_comparators(task: str, labels: list[str] | None, a: str, b: str, score: float) -> None:
    assert compare_answers(task, a, b, labels) == pytest.approx(score)


SCHEMA = {"type": "object", "required": ["city"], "additionalProperties": False,
          "properties": {"city": {"type": "string"}, "guests": {"type": "integer", "minimum": 1}}}


@pytest.mark.parametrize("spec, text, answer, conf, flags", [
    ({"task": "classification", "labels": ["billing", "technical"]}, "x", "refunds", None, ["label_outside_set"]),
    ({"task": "classification", "labels": ["billing", "technical"]}, "x", "Billing", None, []),
    ({"task": "extraction"}, "table in Paris", "sure!", None, ["invalid_json"]),
    ({"task": "extraction", "schema": SCHEMA}, "Paris for 2", '{"city": "Paris", "guests": 2}', None, []),
    ({"task": "extraction", "schema": SCHEMA}, "Paris for 2", '{"city": "London"}', None,
     ["value_not_in_input:city"]),
    ({"task": "extraction", "schema": SCHEMA}, "for 0 in Paris", '{"guests": 0, "x": "Paris"}', None,
     ["schema:$: missing required field 'city'", "schema:$: unexpected field 'x'", "schema:$.guests: 0 < minimum 1"]),
    ({"task": "classification", "labels": ["a", "b"], "min_confidence": 0.5}, "x", "a", 0.2, ["out_of_scope"]),
])
def test_hallucination_checks(spec: dict, text: str, answer: str, conf: float | None, flags: list[str]) -> None:
    got = check_answer(CheckSpec.model_validate(spec), text, answer, confidence=conf)
    assert sorted(got) == sorted(flags)


def test_schema_and_value_helpers() -> None:
    assert schema_errors([1, "a"], {"type": "array", "items": {"type": "integer"}}) == ["$[1]: expected integer, got str"]
    assert schema_errors(True, {"type": "integer"}) == ["$: expected integer, got bool"]
    assert values_not_in_input({"n": 12, "who": {"name": "Ann  Lee"}, "ok": True}, "ann lee, 12 people") == []
    assert values_not_in_input({"phone": "555-0100"}, "call 5550100") == ["phone"]


def test_a_swapped_model_gets_a_fresh_confidence_baseline() -> None:
    """After `tiergate retrain` swaps the small model, its confidences were judged against the old model's first
    window: unchanged traffic alarmed, and with hold_on_drift held the new rollout for good."""
    rng = np.random.default_rng(2)
    settings = DetectorSettings(window=100, step=50, alpha=0.002)
    old, new = rng.beta(20, 1, 300), rng.beta(5, 2, 400)  # the retrained model is less sure of itself, evenly
    kept = DriftDetector(settings)
    for c in old:
        kept.add_output(None, c)
    assert [r.alarm for c in new for r in kept.add_output(None, c)][-1]  # without the reset: an alarm
    det = DriftDetector(settings)
    for c in old:
        det.add_output(None, c)
    assert det.reset_model() == ["confidence"] and det.baseline is None and "confidence" not in det.last
    ran = [r for c in new for r in det.add_output(None, c)]
    assert ran and not any(r.alarm for r in ran)  # the new model's first window is its own baseline
    given = DriftDetector(settings, baseline_confidences=list(old))
    given.reset_model()
    assert given.baseline == list(old)  # a baseline given by the operator stays


def test_advance_hold_names_every_reason_and_next_action_reads_the_stage() -> None:
    from tiergate.rollout.gates import Verdict, advance_hold, next_action

    gates = GateConfig(min_stage_s=600, hold_on_drift=True)
    both = advance_hold(gates, 30, ["input"])
    assert both is not None and "min_stage_s 600" in both and "drift alarm (input)" in both  # not the first only
    assert advance_hold(gates, 900, []) is None
    advance, wait, rollback = Verdict("advance", [], {}), Verdict(None, [], {}), Verdict("rollback", [], {})
    assert next_action("shadow", False, advance, None) == "advance"
    assert next_action("shadow", True, advance, None) == "held"
    assert next_action("canary-10", False, advance, both) == "wait"
    assert next_action("shadow", True, wait, None) == "wait"
    assert next_action("full", False, advance, None) == "none"  # nothing to advance to
    assert next_action("full", False, rollback, None) == "rollback"
    assert next_action("rolled_back", False, rollback, None) == "none"
