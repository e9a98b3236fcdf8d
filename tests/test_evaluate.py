"""The evaluation harness: metrics checked against hand-computed values, the metric registry, a scripted tier
(implementing the real Tier interface) scored end to end, cost accounting, and JSON / Markdown / HTML reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.routing_support import classifier  # noqa: F401  (a fixture)
from tiergate.config import PriceConfig
from tiergate.data import Dataset, Example
from tiergate.errors import UpstreamError
from tiergate.evaluate import (
    EvalOptions,
    Scored,
    compute_metrics,
    evaluate_tier,
    load_reports,
    metric_names,
    register_metric,
    unregister_metric,
    write_reports,
)
from tiergate.evaluate.harness import request_cost
from tiergate.evaluate.metrics import INVALID, match_label
from tiergate.evaluate.text_metrics import lcs_length, parse_json_object, rouge_l
from tiergate.tiers.base import StreamChunk, Tier, TierResult, make_completion
from tiergate.train.calibration import expected_calibration_error, fit_temperature, softmax


class ScriptedTier(Tier):
    """A tier that answers from a script: input text -> answer; 'boom' fails like an upstream would."""

    kind = "scripted"

    def __init__(self, name: str, script: dict[str, str], price: PriceConfig | None = None) -> None:
        super().__init__(name, type("Cfg", (), {"price": price or PriceConfig()})())
        self.script = script
        self.bodies: list[dict[str, Any]] = []

    async def complete(self, body: dict[str, Any]) -> TierResult:
        self.bodies.append(body)
        text = body["messages"][-1]["content"]
        if text == "boom":
            raise UpstreamError("upstream exploded")
        answer = self.script[text]
        return TierResult(make_completion(self.name, answer, prompt_tokens=100, completion_tokens=10),
                          prompt_tokens=100, completion_tokens=10, confidence=0.75)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError
        yield  # pragma: no cover


CLS_GOLDS = ["a", "a", "a", "b", "b", "c"]
CLS_PREDS = ["a", " A. ", "b", "b", "c", None]


def cls_scored(**kw: Any) -> Scored:
    return Scored(task="classification", golds=CLS_GOLDS, preds=CLS_PREDS, labels=["a", "b", "c"], **kw)


# -- classification ------------------------------------------------------------------------------------------------

def test_classification_metrics_by_hand() -> None:
    m = compute_metrics(cls_scored(), ["accuracy", "macro_f1", "confusion_matrix"])
    assert m["accuracy"] == pytest.approx(3 / 6)
    # a: P 1, R 2/3 -> F1 0.8;  b: P 1/2, R 1/2 -> 0.5;  c: 0 -> macro (0.8 + 0.5 + 0) / 3
    assert m["per_label"]["a"]["f1"] == pytest.approx(0.8)
    assert m["per_label"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["macro_f1"] == pytest.approx(1.3 / 3)
    assert m["confusion_matrix"] == {"labels": ["a", "b", "c", INVALID],
                                     "matrix": [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]}


def test_match_label() -> None:
    labels = ["card_arrival", "Refund"]
    assert match_label("card_arrival", labels) == "card_arrival"
    assert match_label(' "Card_Arrival." ', labels) == "card_arrival"
    assert match_label("refund", labels) == "Refund"
    assert match_label("the refund", labels) == INVALID
    assert match_label(None, labels) == INVALID


def test_ece_by_hand() -> None:
    # five confidences in five different bins: ECE is the mean |hit - confidence|
    conf, hits = [0.95, 0.85, 0.62, 0.72, 0.92], [1, 1, 0, 1, 0]
    assert expected_calibration_error(conf, hits) == pytest.approx((0.05 + 0.15 + 0.62 + 0.28 + 0.92) / 5)
    # one bin: |accuracy 0.5 - mean confidence 0.955|
    assert expected_calibration_error([0.95, 0.96], [1, 0]) == pytest.approx(0.455)
    m = compute_metrics(cls_scored(confidences=[0.95, 0.85, 0.62, 0.72, 0.92, None]), ["ece"])
    assert m["ece"] == pytest.approx(0.404)


def test_temperature_scaling_cools_overconfident_logits() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), labels] += 1.0
    hot = logits * 6  # right 70% of the time with ~100% confidence
    t = fit_temperature(hot, labels)
    assert 3 < t < 12
    before = softmax(hot).max(1)
    after = softmax(hot, t)
    hit = after.argmax(1) == labels
    assert expected_calibration_error(after.max(1), hit) < expected_calibration_error(before, hit) / 2


# -- extraction and generation ---------------------------------------------------------------------------------------

def test_extraction_metrics_by_hand() -> None:
    golds = [{"name": "Ann", "time": "5pm"}, {"name": "Bob", "people": "2"}, {"name": "Cy"}]
    preds = ['```json\n{"name": "ann", "time": "6pm"}\n```', 'Here: {"name": "Bob", "people": 2, "date": null}',
             "not json"]
    m = compute_metrics(Scored(task="extraction", golds=golds, preds=preds), ["json_valid", "field_f1", "exact_match"])
    assert m["json_valid"] == pytest.approx(2 / 3)
    # tp: name x2, people; fp: time (wrong); fn: time, name of row 3
    assert m["field_precision"] == pytest.approx(3 / 4)
    assert m["field_recall"] == pytest.approx(3 / 5)
    assert m["field_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["per_field"]["name"]["f1"] == pytest.approx(0.8)
    assert m["per_field"]["time"]["f1"] == 0.0 and m["per_field"]["people"]["f1"] == 1.0
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert parse_json_object("[1, 2]") is None


def test_rouge_l_by_hand() -> None:
    assert lcs_length("abcbdab", "bdcaba") == 4
    # LCS 5 of 6 reference and 5 candidate tokens: P 1, R 5/6
    assert rouge_l("The cat sat on the mat", "the cat on the mat") == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))
    m = compute_metrics(Scored(task="generation", golds=["The cat sat on the mat", "a b c d"],
                               preds=["the cat on the mat", "d c b a"]), ["rouge_l"])
    assert m["rouge_l"] == pytest.approx((2 * (5 / 6) / (1 + 5 / 6) + 0.25) / 2)


@pytest.mark.slow
def test_embedding_similarity() -> None:
    m = compute_metrics(Scored(task="generation", golds=["Your refund is on its way.", "Hello"],
                               preds=["Your refund is on its way.", None]), ["embedding_similarity"])
    assert m["embedding_similarity"] == pytest.approx(0.5, abs=1e-3)


# -- latency, cost, registry ------------------------------------------------------------------------------------------

def test_latency_and_cost_by_hand() -> None:
    s = Scored(task="classification", golds=["a"] * 5, preds=["a"] * 5, latencies_ms=[10, 20, 30, 40, 100],
               costs_usd=[0.001, 0.002, 0.003, 0.004, 0.005], wall_s=2.0, errors=[None, "x", None, None, None])
    m = compute_metrics(s, ["latency", "cost", "errors"])
    assert m["latency_ms_p50"] == 30 and m["latency_ms_p95"] == pytest.approx(88.0)  # 40 + 0.8 * 60
    assert m["latency_ms_mean"] == 40 and m["throughput_rps"] == 2.5
    assert m["cost_per_1k_usd"] == pytest.approx(3.0)
    assert m["errors"] == 1 and m["error_rate"] == 0.2
    api = PriceConfig(input_per_mtok=2.5, output_per_mtok=10, per_request_usd=0.0001)
    assert request_cost(api, 1000, 200, None) == pytest.approx(0.0025 + 0.002 + 0.0001)
    hosted = PriceConfig(hourly_usd=3.6, throughput_rps=10)
    assert request_cost(hosted, 1000, 200, measured_rps=50) == pytest.approx(0.0001)
    assert request_cost(None, 1000, 200, None) == 0.0


def test_metric_registry() -> None:
    assert {"accuracy", "macro_f1", "latency"} <= set(metric_names("classification"))
    assert "rouge_l" not in metric_names("classification")
    register_metric("answer_chars", ("classification",), lambda s: {"answer_chars": sum(len(p or "") for p in s.preds)})
    try:
        assert compute_metrics(cls_scored())["answer_chars"] == 1 + 4 + 1 + 1 + 1
    finally:
        unregister_metric("answer_chars")
    assert "answer_chars" not in metric_names()


# -- harness and reports --------------------------------------------------------------------------------------------

def intents() -> Dataset:
    rows = [("where is my card", "card"), ("card still not here", "card"), ("refund please", "refund"),
            ("money back", "refund"), ("boom", "card")]
    return Dataset([Example(t, lab, i + 2) for i, (t, lab) in enumerate(rows)], "classification", path="test.csv")


def test_harness_scores_a_tier(tmp_path: Path) -> None:
    script = {"where is my card": "card", "card still not here": "refund", "refund please": "Refund.",
              "money back": "I think refund"}
    tier = ScriptedTier("frontier", script, PriceConfig(input_per_mtok=1.0, output_per_mtok=10.0))
    report = evaluate_tier(tier, intents(), EvalOptions(concurrency=2))
    m = report.metrics
    assert report.n == 5 and report.task == "classification"
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["errors"] == 1 and m["error_rate"] == pytest.approx(0.2)
    # each answered request: 100 prompt tokens at $1/M + 10 completion at $10/M = $0.0002; failures cost 0
    assert m["cost_per_1k_usd"] == pytest.approx(0.0002 * 4 / 5 * 1000)
    assert m["latency_ms_p50"] >= 0 and m["throughput_rps"] > 0
    system = tier.bodies[0]["messages"][0]
    assert system["role"] == "system" and "card, refund" in system["content"]
    assert {x["input"] for x in report.mistakes} == {"card still not here", "money back", "boom"}
    assert EvalOptions().concurrency == 8
    plain = ScriptedTier("t", script)
    limited = evaluate_tier(plain, intents(), EvalOptions(limit=2, auto_prompt=False))
    assert limited.n == 2 and limited.metrics["accuracy"] == 0.5
    assert [len(b["messages"]) for b in plain.bodies] == [1, 1]


def test_reports_json_markdown_html(tmp_path: Path) -> None:
    script = {"where is my card": "card", "card still not here": "card", "refund please": "refund",
              "money back": "refund"}
    a = evaluate_tier(ScriptedTier("small", script), intents())
    b = evaluate_tier(ScriptedTier("frontier", {**script, "money back": "card"}), intents())
    write_reports([a], json_path=tmp_path / "a.json")
    single = json.loads((tmp_path / "a.json").read_text())
    assert single["task"] == "classification" and single["n"] == 5 and single["tier"] == "small"
    for key in ("accuracy", "macro_f1", "confusion_matrix", "latency_ms_p50", "latency_ms_p95", "cost_per_1k_usd"):
        assert key in single
    assert single["accuracy"] == pytest.approx(0.8)
    write_reports([a, b], json_path=tmp_path / "c.json", md_path=tmp_path / "c.md", html_path=tmp_path / "c.html")
    both = json.loads((tmp_path / "c.json").read_text())
    assert both["task"] == "classification" and both["n"] == 5
    assert [t["tier"] for t in both["tiers"]] == ["small", "frontier"]
    md = (tmp_path / "c.md").read_text()
    assert "| metric | small (scripted) | frontier (scripted) |" in md and "| accuracy | 0.8000 | 0.6000 |" in md
    page = (tmp_path / "c.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "http://" not in page and "https://" not in page
    assert [r.tier for r in load_reports(tmp_path / "c.json")] == ["small", "frontier"]
    assert load_reports(tmp_path / "a.json")[0].metrics["accuracy"] == pytest.approx(0.8)


def test_cli_compare_saved_reports(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tiergate.cli import build_app

    script = {"where is my card": "card", "card still not here": "card", "refund please": "refund",
              "money back": "refund"}
    write_reports([evaluate_tier(ScriptedTier("a", script), intents())], json_path=tmp_path / "a.json")
    write_reports([evaluate_tier(ScriptedTier("b", script), intents())], json_path=tmp_path / "b.json")
    res = CliRunner().invoke(build_app(), ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                           "--md", str(tmp_path / "ab.md"), "--html", str(tmp_path / "ab.html")])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and (tmp_path / "ab.html").is_file()
    assert "| accuracy | 0.8000 | 0.8000 |" in (tmp_path / "ab.md").read_text()


def test_a_config_tier_wins_over_a_registered_model_of_its_name(
        classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The README registers `models/triage` as `triage` and serves it as tier `triage` with a price: evaluating
    `--model triage -c tiergate.yaml` must evaluate the tier (priced), not the bare registered model (unpriced)."""
    import shutil

    from tiergate.evaluate.harness import resolve_tier, tier_pricer
    from tiergate.train.models import ModelRegistry

    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "registry"))
    model = shutil.copytree(classifier, tmp_path / "triage")
    ModelRegistry().register(model)
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text(f"tiers:\n  triage: {{kind: classifier, model: {model}, price: {{hourly_usd: 0.1, "
                   "throughput_rps: 50}}\n")
    tier = resolve_tier("triage", str(cfg))
    assert tier.name == "triage" and tier_pricer(tier) is not None
    assert tier_pricer(resolve_tier("triage")) is None  # no config: the registered model, unpriced


def test_local_models_are_scored_greedily_and_upstream_tiers_keep_their_default() -> None:
    """`tiergate eval` on a local LM sampled at temperature 1 (the harness sent none): the same adapter scored
    field F1 0.917, 0.769 and 0.857 on three runs, and disagreed with the trainer's own greedy scores."""
    from types import SimpleNamespace

    from tiergate.data import Dataset, Example
    from tiergate.errors import ConfigError
    from tiergate.evaluate.harness import EvalOptions, build_requests

    ds = Dataset([Example("charged twice", "billing")], "classification")

    def temps(kind: str, **opts: Any) -> Any:
        return build_requests(SimpleNamespace(kind=kind, name="t"), ds, EvalOptions(**opts))[0].get("temperature")  # type: ignore[arg-type]

    assert temps("local_lm") == 0.0
    assert temps("upstream") is None  # some frontier models accept only their own default
    assert temps("upstream", temperature=0.0) == 0.0 and temps("local_lm", temperature=0.7) == 0.7
    assert temps("classifier", temperature=0.7) is None  # nothing to sample
    assert temps("local_lm", extra_body={"temperature": 0.3}) == 0.3  # an explicit body wins
    with pytest.raises(ConfigError, match="temperature"):
        EvalOptions(temperature=5)
