"""Outcomes files (JSONL and CSV, errors naming file and line, costs from the price book) and the routing
measures: curves, hull, AIQ, APGR, CPT, random and oracle, threshold selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiergate.errors import DataError
from tiergate.routing.calibration import (
    aiq,
    apgr,
    compare_routers,
    cpt,
    random_curve,
    routing_curve,
    selective_curve,
    threshold_for_keep_share,
    threshold_for_quality,
    threshold_for_recall,
    threshold_for_selective_accuracy,
    threshold_for_share,
    upper_hull,
)
from tiergate.routing.outcomes import fill_costs, read_outcomes, write_outcomes


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_outcomes_jsonl_and_csv_roundtrip(tmp_path):
    src = _write(tmp_path / "o.jsonl", [
        json.dumps({"prompt": "where is my card", "scores": {"small": 1, "big": 1}, "costs": {"small": 0.1, "big": 2}}),
        "",
        json.dumps({"prompt": "explain my fees", "scores": {"small": 0, "big": 1}, "costs": {"small": 0.1, "big": 2}}),
    ])
    oc = read_outcomes(src)
    assert oc.tiers == ["small", "big"] and len(oc) == 2 and oc.rows[1].line == 3
    assert oc.scores("small").tolist() == [1.0, 0.0] and oc.costs("big").tolist() == [2.0, 2.0]
    assert oc.order_tiers() == ("small", "big")
    csv_path = write_outcomes(oc, tmp_path / "o.csv")
    assert csv_path.read_text().splitlines()[0] == "prompt,small,big,cost:small,cost:big"
    back = read_outcomes(csv_path)
    assert back.prompts == oc.prompts and back.scores("big").tolist() == [1.0, 1.0] and back.has_costs()


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed JSON"),
    (json.dumps({"prompt": "", "scores": {"a": 1, "b": 0}}), "'prompt' must be a non-empty string"),
    (json.dumps({"prompt": "x", "scores": {"a": "high", "b": 0}}), "scores.a must be a number"),
    (json.dumps({"prompt": "x", "scores": {"a": 1, "c": 0}}), "differ from the first row"),
    (json.dumps({"prompt": "x", "scores": {"a": 1, "b": 0}, "costs": {"z": 1}}), "costs for tier(s) with no score"),
    (json.dumps({"prompt": "x", "scores": {"a": 1, "b": 0}, "extra": 1}), "unknown key(s) extra"),
    (json.dumps({"prompt": "x", "scores": {"a": 1, "b": 0}, "costs": {"a": 0.1, "b": -0.2}}),
     "costs.b must be 0 or more, got -0.2"),
])
def test_outcomes_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "scores": {"a": 1, "b": 0}}), line])
    with pytest.raises(DataError) as err:
        read_outcomes(path)
    assert f"{path}:2: " in str(err.value) and message in str(err.value)


def test_outcomes_csv_errors_and_costs_from_price_book(tmp_path):
    bad = _write(tmp_path / "bad.csv", ["prompt,small,big", "hello,1,", ])
    with pytest.raises(DataError, match=r"bad.csv:2: empty score column 'big'"):
        read_outcomes(bad)
    with pytest.raises(DataError, match="no 'prompt' column"):
        read_outcomes(_write(tmp_path / "np.csv", ["text,small,big", "x,1,0"]))
    oc = read_outcomes(_write(tmp_path / "o.csv", ["prompt,small,big", "a" * 400 + ",1,1"]))
    with pytest.raises(DataError, match="no cost for tier"):
        oc.costs("big")
    filled = fill_costs(oc, fixed={"small": 0.0001}, prices={"big": "gpt-4o"})
    # 400 characters -> 100 estimated prompt tokens + 1 completion token at the shipped gpt-4o list price
    from tiergate.costs.pricebook import load_pricebook

    expected = load_pricebook().model("gpt-4o").request_usd(100, 1)
    assert filled.costs("big")[0] == pytest.approx(expected) and filled.costs("small")[0] == 0.0001
    with pytest.raises(DataError, match=r"--cost small=-1: a cost must be a number of USD, 0 or more"):
        fill_costs(oc, fixed={"small": -1.0, "big": 0.1})


def test_curve_endpoints_ties_and_thresholds():
    r = np.array([0.9, 0.5, 0.5, 0.1])
    s = np.array([0.0, 1.0, 0.0, 1.0])
    lg = np.array([1.0, 1.0, 1.0, 1.0])
    curve = routing_curve(r, s, lg)
    assert [p.large_share for p in curve] == [0.0, 0.25, 0.75, 1.0]  # the tied pair moves together
    assert curve[0].quality == 0.5 and curve[-1].quality == 1.0
    for p in curve:  # escalate iff score > threshold reproduces each point
        assert np.mean(r > p.threshold) == p.large_share


def test_random_oracle_and_measures():
    rng = np.random.default_rng(0)
    n = 2000
    s = (rng.random(n) < 0.6).astype(float)
    lg = np.maximum(s, (rng.random(n) < 0.8).astype(float))
    rep = compare_routers(rng.random(n), s, lg, np.full(n, 0.1), np.full(n, 1.0))
    assert rep["random"]["apgr"] == pytest.approx(0.5)
    assert rep["random"]["cpt_50"] == pytest.approx(0.5) and rep["random"]["cpt_80"] == pytest.approx(0.8)
    # a router of random scores is close to the random router; the oracle dominates both
    assert abs(rep["router"]["apgr"] - 0.5) < 0.05
    gain_share = float(np.mean(lg > s))
    assert rep["oracle"]["cpt_80"] == pytest.approx(0.8 * gain_share, abs=1e-3)
    assert rep["oracle"]["apgr"] > rep["router"]["apgr"] and rep["oracle"]["aiq"] > rep["random"]["aiq"]
    # a perfect router is the oracle
    perfect = compare_routers(lg - s, s, lg)
    assert perfect["router"]["apgr"] == pytest.approx(perfect["oracle"]["apgr"])
    assert rep["curves"]["router"][0]["large_share"] == 0.0 and len(rep["curves"]["router"]) <= 201


def test_hull_and_aiq_on_a_known_curve():
    x = np.array([0.0, 0.5, 0.6, 1.0])
    y = np.array([0.0, 0.2, 0.9, 0.8])
    hx, hy = upper_hull(x, y)
    assert hx.tolist() == [0.0, 0.6] and hy.tolist() == [0.0, 0.9]  # (0.5, 0.2) under the hull; no decrease
    curve = routing_curve([3, 2, 1], [0, 0, 0], [1, 1, 1])
    # a straight line from 0 to 1: area 0.5, equal to the random router's
    assert aiq(curve, axis="large_share") == pytest.approx(0.5)
    assert aiq(random_curve([0, 0], [1, 1]), axis="large_share") == pytest.approx(0.5)
    assert apgr(curve) == pytest.approx(0.5) and cpt(curve, 0.5) == pytest.approx(0.5)
    assert apgr(routing_curve([1, 0], [1, 1], [0, 0])) is None  # the large tier is not better: no gap


def test_threshold_for_share_hits_the_share_on_the_data_and_held_out():
    rng = np.random.default_rng(1)
    val, test = rng.normal(size=5000), rng.normal(size=5000)
    for share in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        t = threshold_for_share(val, share)
        assert abs(np.mean(val > t) - share) <= 1 / 5000
        assert abs(np.mean(test > t) - share) <= 0.03  # ~4 binomial standard errors at n=5000
    coarse = np.repeat([0.1, 0.2, 0.3], [50, 30, 20])  # ties: the nearest reachable share
    assert np.mean(coarse > threshold_for_share(coarse, 0.45)) == 0.5


def test_threshold_for_recall_is_the_least_escalation_reaching_the_recall():
    scores = np.arange(1, 101, dtype=float)  # 100 out-of-scope examples
    for recall, escalated in ((0.95, 95), (0.955, 96), (0.5, 50), (1.0, 100), (0.001, 1)):
        assert np.sum(scores > threshold_for_recall(scores, recall)) == escalated
    tied = np.array([3.0, 3.0, 3.0, 1.0])  # ties escalate together: at least the recall, never less
    assert np.mean(tied > threshold_for_recall(tied, 0.5)) == 0.75
    rng = np.random.default_rng(2)
    val, test = rng.normal(size=100), rng.normal(size=20000)
    # 100 examples pin the recall only loosely: held out, it lands within the Wilson interval of the estimate
    from tiergate.evaluate.metrics import wilson_interval

    t = threshold_for_recall(val, 0.9)
    lo, hi = wilson_interval(int(np.sum(val > t)), 100, 0.975)
    assert lo <= np.mean(test > t) <= hi
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            threshold_for_recall(scores, bad)


def test_threshold_for_quality_floor():
    s = np.array([1, 1, 0, 0, 1, 0], float)
    lg = np.array([1, 1, 1, 1, 1, 0], float)
    r = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.0])
    t, point = threshold_for_quality(r, s, lg, floor=1.0)
    assert point.quality == pytest.approx(lg.mean()) and point.large_share == pytest.approx(2 / 6)
    assert np.mean(r > t) == pytest.approx(2 / 6)


def test_selective_thresholds():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    ok = np.array([1, 1, 1, 0, 1, 0], bool)
    curve = selective_curve(conf, ok)
    assert curve[0] == {"threshold": 0.99, "kept_share": 1 / 6, "accuracy_kept": 1.0}
    t, point = threshold_for_selective_accuracy(conf, ok, 1.0)
    assert t == 0.9 and point["kept_share"] == 0.5
    t, point = threshold_for_selective_accuracy(conf, ok, 0.8)
    assert t == 0.7 and point["accuracy_kept"] == pytest.approx(0.8)
    t = threshold_for_keep_share(conf, 0.5)
    assert np.mean(conf >= t) == 0.5


def test_outcomes_from_shadow_pairs_in_the_store(tmp_path):
    from tiergate.routing.shadow import outcomes_from_shadow
    from tiergate.store.db import open_store
    from tiergate.store.writer import insert_records

    engine = open_store(f"sqlite:///{tmp_path / 'cap.db'}")

    def rec(rid, tier, answer, role="primary", parent=None, cost=0.001, text="where is my card"):
        return {"request_id": rid, "created_at": 1.0, "workload": "triage", "tier": tier, "role": role,
                "parent_request_id": parent, "status": "ok", "stream": False, "answer": answer, "cost_usd": cost,
                "messages": [{"role": "user", "content": text}]}

    insert_records(engine, [
        rec("a", "small", "card_arrival"), rec("a-s", "large", "Card_Arrival ", "shadow", "a", 0.01),
        rec("b", "small", "refund", text="give me my money"), rec("b-s", "large", "dispute", "shadow", "b", 0.01),
        rec("c", "small", "x", text="no pair"),                                   # no shadow
        rec("d", "other", "x"), rec("d-s", "large", "x", "shadow", "d"),          # another tier
    ])
    oc = outcomes_from_shadow(engine, small="small", large="large", workload="triage")
    assert oc.prompts == ["where is my card", "give me my money"]
    assert oc.scores("small").tolist() == [1.0, 0.0] and oc.scores("large").tolist() == [1.0, 1.0]
    assert oc.costs("large").tolist() == [0.01, 0.01] and oc.meta["source"] == "shadow"
    with pytest.raises(DataError, match="no captured shadow pairs"):
        outcomes_from_shadow(engine, small="small", large="large", workload="elsewhere")


def test_escalate_everything_threshold_stays_a_probability() -> None:
    """When only escalating everything reaches the quality floor, the threshold was min(score) - 1 (-0.996 for
    probabilities): `router train learned` wrote it, though the policy's `threshold` accepts 0-1 only."""
    import numpy as np

    from tiergate.routing.calibration import threshold_for_quality, threshold_for_share

    p = np.array([0.004, 0.2, 0.6, 0.9])
    thr, point = threshold_for_quality(p, [0, 0, 0, 0], [1, 1, 1, 1], floor=1.0)
    assert point.large_share == 1.0 and 0.0 <= thr < 0.004 and (p > thr).all()
    share_thr = threshold_for_share(p, 1.0)
    assert 0.0 <= share_thr < 0.004 and (p > share_thr).all()
