"""The cascade with real classifier-tier answers: keep or escalate by calibrated confidence, label-set and
JSON-schema validity, through the gateway with both answers kept; cascade and boundary commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.routing_support import INTENTS, OOS, classifier, cli, config, decide, req  # noqa: F401

# ruff: noqa: F811  (the fixtures imported above are test parameters below)
from tiergate.routing.policy import Routing

pytestmark = pytest.mark.slow


def test_cascade_reviews_real_classifier_answers(tmp_path, classifier):
    from tiergate.config import ClassifierTierConfig
    from tiergate.tiers.base import TierResult, make_completion
    from tiergate.tiers.registry import build_tier

    async def run() -> tuple[Any, ...]:
        tier = build_tier("intents", ClassifierTierConfig(kind="classifier", model=str(classifier), device="cpu"))
        await tier.start()
        try:
            policy = [{"kind": "cascade", "small": "intents", "large": "frontier", "threshold": 0.0}]
            keep_all = Routing.from_config(config(tmp_path, policy, str(classifier)))
            strict = Routing.from_config(config(tmp_path, [{**policy[0], "threshold": 1.0}], str(classifier)))
            request = req("where is my new card")
            d = await decide(keep_all, request)
            assert (d.tier, d.reason) == ("intents", "cascade") and d.reviewer is not None
            result = await tier.complete(request.body)
            kept = await d.reviewer.review(request, result)
            d2 = await decide(strict, request)
            escalated = await d2.reviewer.review(request, result)
            # an answer outside the label set escalates whatever its confidence
            alien = TierResult(make_completion("m", "not_a_label", prompt_tokens=1, completion_tokens=1),
                               confidence=0.99)
            invalid = await d.reviewer.review(request, alien)
            return result, kept, escalated, invalid
        finally:
            await tier.close()

    result, kept, escalated, invalid = asyncio.run(run())
    assert result.content in INTENTS and 0 < result.confidence < 1
    assert kept is None
    assert (escalated.tier, escalated.reason, escalated.detail["why"]) == ("frontier", "cascade:escalated",
                                                                           "low_confidence")
    assert escalated.score == pytest.approx(result.confidence)
    assert invalid.detail["why"] == "invalid_label"


def test_cascade_through_the_gateway_keeps_both_answers(tmp_path, classifier):
    """The real classifier tier answers first; the cascade escalates to a stub frontier below its threshold,
    and the record keeps the small tier's answer beside the frontier's."""
    import httpx

    from tiergate.store.records import query_records
    from tiergate.testing.gateway import run_gateway
    from tiergate.testing.stub_process import start_stub

    def cfg(threshold: float, stub: Any) -> dict[str, Any]:
        return {
            "auth": {"require_key": False},
            "store": {"url": f"sqlite:///{tmp_path / f'gw{threshold}.db'}", "flush_interval_ms": 1},
            "tiers": {"intents": {"kind": "classifier", "model": str(classifier), "device": "cpu"},
                      "frontier": {"kind": "upstream", "base_url": stub.base_url, "zone": "external"}},
            "models": {"auto": "auto"}, "routing": {"default_tier": "intents"},
            "workloads": {"default": {"policy": [{"kind": "cascade", "small": "intents", "large": "frontier",
                                                  "threshold": threshold}]}},
        }

    def records(gw: Any) -> list[dict[str, Any]]:
        loop = gw.gateway.writer._task.get_loop()
        asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), loop).result(10)
        return query_records(gw.gateway.engine, limit=None, newest_first=False)

    body = {"model": "auto", "messages": [{"role": "user", "content": "where is my new card"}]}
    with start_stub(model="frontier-model", answers={"where is my new card": "card_arrival (frontier)"}) as stub:
        with run_gateway(cfg(1.0, stub)) as gw:  # every confidence is below 1: escalate
            r = httpx.post(gw.base_url + "/chat/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            assert r.headers["x-tiergate-tier"] == "frontier"
            assert r.headers["x-tiergate-route-reason"] == "cascade:escalated"
            assert r.json()["choices"][0]["message"]["content"] == "card_arrival (frontier)"
            recs = records(gw)
            first = [x for x in recs if x["role"] == "cascade_first"]
            final = [x for x in recs if x["role"] == "primary"]
            assert len(first) == 1 and first[0]["tier"] == "intents" and first[0]["answer"] in INTENTS
            assert final[0]["answer"] == "card_arrival (frontier)"
            assert final[0]["response"]["cascade"]["first_answer"] == first[0]["answer"]
            assert len(stub.requests()) == 1
        stub.reset()
        with run_gateway(cfg(0.0, stub)) as gw:  # every answer is kept
            r = httpx.post(gw.base_url + "/chat/completions", json=body, timeout=60)
            assert r.headers["x-tiergate-tier"] == "intents"
            assert r.headers["x-tiergate-route-reason"] == "cascade:kept" and not stub.requests()


def test_cascade_json_checks_andconfig(tmp_path):
    from tiergate.errors import ConfigError
    from tiergate.tiers.base import TierResult, make_completion

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
              "required": ["city"], "additionalProperties": False}
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    routing = Routing.from_config(config(tmp_path, [{"kind": "cascade", "small": "local", "large": "frontier",
                                                      "threshold": 0.5}]))
    router = routing.routers()[0]

    def review(content: str, conf: float | None = 0.9, **b: Any) -> Any:
        res = TierResult(make_completion("m", content, prompt_tokens=1, completion_tokens=1), confidence=conf)
        d = asyncio.run(router.review(req("x", **b), res))
        return None if d is None else d.detail["why"]

    assert review('{"city": "Oslo", "n": 2}', **body) is None
    assert review('```json\n{"city": "Oslo"}\n```', **body) is None
    assert review('{"city": "Oslo", "n": -1}', **body) == "schema_mismatch"
    assert review('{"town": "Oslo"}', **body) == "schema_mismatch"
    assert review("Oslo", **body) == "invalid_json"
    assert review("{}", response_format={"type": "json_object"}) is None
    assert review("", conf=0.99) == "empty"
    assert review("fine", conf=None) == "no_confidence"
    assert review("fine", conf=0.2) == "low_confidence"
    stream = asyncio.run(routing.route(req("x", stream=True)))
    assert stream.reviewer is not None  # on_stream: cascade (the gateway buffers)
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"threshold": 0.7}))
    from_file = Routing.from_config(config(tmp_path, [{"kind": "cascade", "small": "local", "large": "frontier",
                                                        "calibration": str(cal)}]))
    assert from_file.routers()[0].threshold == 0.7
    with pytest.raises(ConfigError, match="threshold"):
        Routing.from_config(config(tmp_path, [{"kind": "cascade", "small": "local", "large": "frontier"}]))


def test_cli_boundary_train_and_evaluate_and_cascade_calibrate(tmp_path, classifier, cli):
    import csv

    def write(path: Path, rows: list[tuple[str, str]]) -> Path:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        return path

    train = write(tmp_path / "train.csv", [(t, k) for k, rows in INTENTS.items() for t in rows[:7]])
    val = write(tmp_path / "val.csv", [(t, k) for k, rows in INTENTS.items() for t in rows[7:]])
    labelled = write(tmp_path / "lab.csv", [(t, k) for k, rows in INTENTS.items() for t in rows[7:]]
                     + [(t, "oos") for t in OOS])
    runner = CliRunner()
    out = tmp_path / "boundary"
    res = runner.invoke(cli, ["router", "train", "boundary", "--data", str(train), "--val", str(val),
                              "--classifier", str(classifier), "--out", str(out), "--set", "k=1",
                              "--set", "target_in_scope=1.0"])
    assert res.exit_code == 0, res.output
    from tiergate.errors import ConfigError

    bad = runner.invoke(cli, ["router", "train", "boundary", "--data", str(train), "--val", str(val),
                              "--out", str(tmp_path / "bad"), "--set", "signals=[knn,nearest]", "--set", "k=0"])
    assert isinstance(bad.exception, ConfigError)  # main() prints it as "error: ...", exit 2, no traceback
    assert "signals.1" in bad.exception.message and "--set: k:" in bad.exception.message
    res = runner.invoke(cli, ["router", "boundary", "--router", str(out), "--data", str(labelled),
                              "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["oos_n"] == len(OOS) and 0 <= report["oos_recall"] <= 1 and report["curve"]
    for key in ("oos_recall", "in_scope_kept", "in_scope_accuracy"):
        lo, hi = report[f"{key}_ci95"]
        assert lo <= report[key] <= hi and hi - lo > 0.05
    oos = write(tmp_path / "oos.csv", [(t, "oos") for t in OOS])
    res = runner.invoke(cli, ["router", "train", "boundary", "--data", str(train), "--val", str(val),
                              "--classifier", str(classifier), "--oos", str(oos), "--out", str(tmp_path / "r"),
                              "--set", "target_oos_recall=0.9"])
    assert res.exit_code == 0, res.output
    assert "escalates 91.7% of the 12 out-of-scope examples (95% interval" in res.output
    assert "fitted on them" in res.output
    res = runner.invoke(cli, ["router", "calibrate", "--classifier", str(classifier), "--data", str(val),
                              "--keep-share", "0.67", "--out", str(tmp_path / "cascade.json")])
    assert res.exit_code == 0, res.output
    cal = json.loads((tmp_path / "cascade.json").read_text())
    assert abs(cal["validation"]["kept_share"] - 0.67) < 0.12 and 0 < cal["threshold"] < 1


def test_cli_warnings_are_warning_lines_not_python_echoes(tmp_path, classifier, monkeypatch, capsys):
    import sys

    from tiergate.cli import main

    rows = [(t, k) for k, texts in INTENTS.items() for t in texts[:7]]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{k}\n" for t, k in rows[1:]))
    (tmp_path / "val.csv").write_text("text,label\n" + "".join(f"{t},{k}\n" for k, texts in INTENTS.items()
                                                                for t in texts[7:]))
    monkeypatch.setattr(sys, "argv", ["tiergate", "router", "train", "boundary", "--data", str(tmp_path / "train.csv"),
                                      "--val", str(tmp_path / "val.csv"), "--classifier", str(classifier),
                                      "--out", str(tmp_path / "b"), "--set", "k=1"])
    main()
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'train.csv'} is not the data {classifier} was trained on" in err, err
    assert "UserWarning" not in err and "router.py" not in err
