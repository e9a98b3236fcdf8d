"""`tiergate retrain`: a dataset from frontier-answered traffic in the store, a candidate trained with the
classifier trainer (the bundled MiniLM, a few steps), the regression check against the current model, a new
shadow rollout only when the candidate is not worse, and a gateway serving the retrained model."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.test_monitor_gateway import cli_app
from tests.test_rollout_gateway import rollout_gateway
from tiergate.config import parse_config
from tiergate.data import Dataset, Example
from tiergate.rollout.retrain import RetrainOptions, retrain, traffic_dataset
from tiergate.rollout.state import RolloutStore
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record
from tiergate.train import get_trainer

pytestmark = pytest.mark.slow

PHRASES = {
    "card_arrival": ["where is my new card", "my card has not arrived yet", "card still not delivered",
                     "when will my card come", "has my card been posted", "tracking for my card",
                     "I am still waiting on my card", "how long does card delivery take", "is my card on its way",
                     "card delivery status please"],
    "refund": ["I want a refund", "please give my money back", "refund the purchase", "how do I get reimbursed",
               "return the money for my order", "can I get a refund", "the item was faulty, refund me",
               "request a refund for this charge", "I need my money returned", "refund my last payment"],
    "greeting": ["hello there", "hi", "good morning", "hey, how are you", "greetings", "hello bot",
                 "good evening to you", "hi team", "hey there friend", "morning all"],
}
FAST = {"max_steps": 9, "batch_size": 8, "max_seq_len": 16, "learning_rate": 1e-4, "head_learning_rate": 3e-2,
        "warmup_ratio": 0.0, "progress": False, "val_fraction": 0.0, "num_threads": 1, "eval_every_epoch": False}


def _record(i: int, text: str, answer: str, tier: str, role: str = "primary") -> dict[str, Any]:
    return normalize_record({
        "request_id": f"req_{role}_{i}", "created_at": time.time() - 60 + i * 0.01, "workload": "cards",
        "tier": tier, "role": role, "status": "ok", "messages": [{"role": "user", "content": text}],
        "answer": answer, "route_reason": "rollout:shadow" if role == "primary" else "shadow"})


def test_retrain_from_traffic_regression_check_and_shadow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "registry"))
    monkeypatch.chdir(tmp_path)
    # the current model: trained on scrambled labels, so fresh traffic shows it is poor
    labels = list(PHRASES)
    scrambled = [Example(t, labels[(labels.index(lab) + 1) % 3]) for lab, ts in PHRASES.items() for t in ts[:4]]
    trainer = get_trainer("classifier")
    current = trainer.train(Dataset(scrambled, "classification"), None, tmp_path / "current",
                            trainer.make_config({**FAST, "max_steps": 2}))
    url = f"sqlite:///{tmp_path / 't.db'}"
    engine = open_store(url)
    rows, i = [], 0
    for label, texts in PHRASES.items():
        for text in texts:
            i += 1
            rows.append(_record(i, text, f" {label.upper()}.", "frontier"))  # answers are matched to labels
            rows.append(_record(i, text + "!", "nonsense", "small", "shadow"))  # not ground truth
    rows.append(_record(999, "what's the weather", "not a label", "frontier"))  # outside the label set
    insert_records(engine, rows)
    cfg = parse_config({
        "store": {"url": url}, "auth": {"require_key": False},
        "tiers": {"frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1"},
                  "small": {"kind": "classifier", "model": str(current.path)}},
        "workloads": {"cards": {"task": "classification", "policy": [
            {"kind": "rollout", "primary": "frontier", "candidate": "small", "shadow_fraction": 1.0}]}},
    })
    ds = traffic_dataset(engine, "cards", ["frontier"], labels=labels)
    assert len(ds) == 30 and set(ds.labels()) == set(labels)

    store = RolloutStore(engine)
    report = retrain(engine, cfg, "cards", RetrainOptions(out=str(tmp_path / "r1"), trainer=FAST, min_examples=20))
    assert report.examples == 30 and report.test_examples == 6
    assert report.current_model == str(current.path)
    assert report.accepted, report.reason
    assert report.candidate_metrics["accuracy"] >= report.current_metrics["accuracy"]
    state = store.require("cards")
    assert state.stage == "shadow" and state.candidate_model == str((tmp_path / "r1").resolve())
    assert store.history("cards")[-1]["actor"] == "retrain"
    assert (tmp_path / "registry" / "index.json").exists()

    # not better than the model now in the rollout (by a margin it cannot reach): rejected, nothing changes
    cfg_path = tmp_path / "tiergate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(cli_app(), [
        "retrain", "cards", "-c", str(cfg_path), "--out", str(tmp_path / "r2"), "--margin", "1.01",
        "--min-examples", "20", "--json", *[arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]])
    assert result.exit_code == 0, result.output
    rejected = json.loads(result.output[result.output.rindex('{\n  "workload"'):])
    assert not rejected["accepted"] and rejected["current_model"] == state.candidate_model
    assert rejected["rollout"] is None and "< current" in rejected["reason"]
    assert store.require("cards").version == state.version

    # a gateway starting now serves the retrained model from the candidate tier, loaded once (the stored state's
    # change callback and the start both asked for it, and both loaded it)
    caplog.set_level(logging.WARNING, logger="tiergate.rollout")
    with rollout_gateway(cfg.model_dump(mode="json")) as (gw, manager):
        tier = gw.gateway.tiers["small"]
        assert tier.config.model == state.candidate_model
        assert sum("now serves" in r.getMessage() for r in caplog.records) == 1
        assert manager.runtimes["cards"].labels == sorted(labels)
    engine.dispose()
    assert json.loads((tmp_path / "r1" / "labels.json").read_text()) == sorted(labels)
