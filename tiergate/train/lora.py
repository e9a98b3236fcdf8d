"""The `lora` trainer: supervised fine-tuning of a causal LM (the bundled SmolLM2 by default) with a LoRA adapter.

    trainer = LoraTrainer()
    model = trainer.train(train_ds, eval_ds, "out/extract-lora", trainer.make_config({"epochs": 2}))
    # out/extract-lora: adapter_config.json + adapter_model.safetensors (PEFT), the tokenizer, the manifest

Each example becomes the tokenizer's chat template over its input messages (a text input is one user message,
after the `system_prompt`) and the answer (compact JSON for extraction, the label for classification, the text
for generation); the loss covers the answer tokens only (see `tiergate.train.lora_data`). The base weights stay
frozen; PEFT LoRA matrices (`lora_r`, `lora_alpha`, `lora_dropout`) on `target_modules` are trained with AdamW,
warmup then cosine or linear decay, gradient accumulation and clipping. On a CUDA GPU the base model is held
in bfloat16 with bf16 autocast and gradient checkpointing (both `auto`); on a CPU everything is float32.

A checkpoint (LoRA weights, optimizer, scheduler, RNG state) is written every `checkpoint_every` steps and at
each epoch's end; a rerun with the same OUT resumes from it with the same result as an uninterrupted run (on a
CPU; GPU kernels are not bitwise deterministic). Initialisation, dropout and batch order derive from `seed`.

The adapter is saved with PEFT's own `save_pretrained` (standard key names, `base_model_name_or_path` = the
base model as configured), so it loads with `PeftModel.from_pretrained`, with vLLM's `--lora-modules`, and as a
`local_lm` tier (`model: BASE, adapter: OUT`), which is what `resolve_tier(OUT)` builds from the manifest.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiergate.data.dataset import Dataset
from tiergate.data.split import split_dataset
from tiergate.train.base import TrainedModel, Trainer, finish_model_dir
from tiergate.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tiergate.train.loop import DivergenceGuard, StepHook, epoch_batches, lr_lambda, make_adamw, peak_rss_mb
from tiergate.train.lora_config import LoraTrainerConfig
from tiergate.train.lora_data import (
    IGNORE,
    SFTExample,
    collate,
    encode_dataset,
    left_padded,
    resolve_system_prompt,
)

GENERATED_METRICS = {"extraction": ("json_valid", "field_f1", "exact_match"), "classification": ("accuracy",),
                     "generation": ("rouge_l",)}
"""What the greedy answers to eval examples are scored with (metric names of `tiergate.evaluate.metrics`)."""


class Precision:
    """Where and how the model runs: device, bf16 autocast, gradient checkpointing (config 'auto' resolved)."""

    def __init__(self, config: LoraTrainerConfig) -> None:
        from tiergate.tiers.hf import resolve_device

        self.device = resolve_device(config.device)
        cuda = self.device.startswith("cuda")
        if config.bf16 == "on" and not (cuda and torch.cuda.is_bf16_supported()):
            from tiergate.errors import ConfigError

            raise ConfigError("bf16=on needs a CUDA GPU that supports bfloat16; use bf16=auto or off")
        self.bf16 = config.bf16 == "on" or (config.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
        self.checkpointing = config.gradient_checkpointing == "on" or (config.gradient_checkpointing == "auto"
                                                                      and cuda)

    def autocast(self) -> Any:
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16)


def answer_loss(model: Any, batch: list[SFTExample], pad_id: int, precision: Precision) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the answer tokens of one micro-batch, and how many there are."""
    ids, mask, labels = (t.to(precision.device) for t in collate(batch, pad_id))
    with precision.autocast():
        logits = model(input_ids=ids, attention_mask=mask).logits
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(),
                                             ignore_index=IGNORE, reduction="sum")
    return loss, int((target != IGNORE).sum().item())


@torch.no_grad()
def eval_loss(model: Any, examples: list[SFTExample], pad_id: int, precision: Precision, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        loss, n = answer_loss(model, examples[i:i + batch_size], pad_id, precision)
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def greedy_answers(model: Any, tokenizer: Any, prompts: list[list[int]], precision: Precision,
                   batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy decoding of each prompt (the way the local tier answers at temperature 0)."""
    was_training = model.training
    model.eval()
    eos = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    eos |= set(configured if isinstance(configured, list) else [configured])
    eos.discard(None)
    answers = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_padded(prompts[i:i + batch_size], tokenizer.pad_token_id)
        with precision.autocast():
            out = model.generate(input_ids=ids.to(precision.device), attention_mask=mask.to(precision.device),
                                 max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos))
        answers += [t.strip() for t in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
    model.train(was_training)
    return answers


class LoraTrainer(Trainer[LoraTrainerConfig]):
    name = "lora"
    tasks = ("extraction", "generation", "classification")
    config_class = LoraTrainerConfig

    def __init__(self, on_step: StepHook | None = None) -> None:
        self.on_step = on_step
        """Called after each optimizer step with (step, loss); raising in it stops training (tests use it to
        simulate an interruption)."""

    def train(self, train_ds: Dataset, eval_ds: Dataset | None, out_dir: str | Path,
              config: LoraTrainerConfig) -> TrainedModel:
        from peft import LoraConfig, get_peft_model
        from tqdm.auto import tqdm

        from tiergate.tiers.hf import LOAD_LOCK, load_causal_lm, peft_quietly

        started = time.perf_counter()
        out = Path(out_dir)
        self.check_task(train_ds.validate())
        data_hash = train_ds.data_hash()  # of the data as given, before a validation share is carved out
        if eval_ds is None and config.val_fraction > 0 and len(train_ds) > 1:
            carved = split_dataset(train_ds, val=config.val_fraction, test=0.0, seed=config.seed)
            train_ds, eval_ds = carved.train, carved.validation
        if eval_ds is not None:
            self.check_task(eval_ds)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        precision = Precision(config)
        model, tokenizer = load_causal_lm(
            config.base_model, device=precision.device, dtype="bfloat16" if precision.bf16 else "float32",
            cache_dir=config.cache_dir, eval_mode=False)
        if precision.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        system = resolve_system_prompt(config.system_prompt, train_ds)
        train_sft = encode_dataset(tokenizer, train_ds, system, config.max_seq_len)
        eval_sft = encode_dataset(tokenizer, eval_ds, system, config.max_seq_len) if eval_ds is not None else []
        pad_id = tokenizer.pad_token_id

        torch.manual_seed(config.seed)  # LoRA A matrices are drawn here
        with LOAD_LOCK, peft_quietly():  # new LoRA modules race other threads' from_pretrained (tiers.hf.LOAD_LOCK)
            try:
                model = get_peft_model(model, LoraConfig(
                    r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                    target_modules=config.modules(), bias="none", task_type="CAUSAL_LM"))
            except ValueError as exc:  # PEFT: no module matches target_modules (NoMatchingPeftModuleError)
                from tiergate.errors import ConfigError

                raise ConfigError(f"lora trainer: target_modules {config.target_modules!r}: "
                                  f"{str(exc).splitlines()[0]}") from exc
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

        lengths = [len(e.input_ids) for e in train_sft]
        micro_per_epoch = math.ceil(len(train_sft) / config.batch_size)
        per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
        total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
        optimizer = make_adamw(list(trainable.values()), lr=config.learning_rate,
                               weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total, int(config.warmup_ratio * total), config.lr_schedule))
        identity = {**config.identity(), "data_hash": data_hash, "total_steps": total}

        step, history, spent, seen_tokens, loop_spent = 0, [], 0.0, 0, 0.0
        ckpt = latest_checkpoint(out) if config.resume else None
        if ckpt is not None:
            state, meta = load_checkpoint(ckpt, identity)
            with torch.no_grad():
                for name, value in state["adapter"].items():
                    trainable[name].copy_(value)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            step, history = int(meta["step"]), list(meta.get("history", []))
            spent, seen_tokens = float(meta.get("elapsed_s", 0.0)), int(meta.get("tokens", 0))
            loop_spent = float(meta.get("loop_s", 0.0))

        def checkpoint() -> None:
            state = {"adapter": {n: p.detach().cpu().clone() for n, p in trainable.items()},
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
            now = time.perf_counter()
            meta = {"identity": identity, "history": history, "tokens": seen_tokens,
                    "elapsed_s": spent + now - started, "loop_s": loop_spent + now - loop_started}
            save_checkpoint(out, step, state, meta, config.keep_checkpoints)

        model.train()
        bar = tqdm(total=total, initial=step, desc=f"train {out.name}", disable=not config.progress, unit="step")
        running: list[float] = []
        guard = DivergenceGuard(config.learning_rate)
        loop_started = time.perf_counter()
        while step < total:
            epoch, offset = divmod(step, per_epoch)
            batches = epoch_batches(lengths, config.batch_size, config.seed, epoch, config.length_bucketing)
            groups = [batches[i:i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)]
            for group in groups[offset:]:
                micro = [[train_sft[i] for i in b] for b in group]
                n_answer = sum(sum(t != IGNORE for t in e.labels) for b in micro for e in b)
                optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                for batch in micro:  # one optimizer step: the mean over every answer token of the group
                    loss, _ = answer_loss(model, batch, pad_id, precision)
                    (loss / n_answer).backward()
                    step_loss += loss.item() / n_answer
                    seen_tokens += sum(len(e.input_ids) for e in batch)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(list(trainable.values()), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                running.append(step_loss)
                guard.check(step, step_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
                if self.on_step is not None:
                    self.on_step(step, step_loss)
                epoch_end = step % per_epoch == 0 or step == total
                if epoch_end:
                    entry: dict[str, Any] = {"epoch": round(step / per_epoch, 3), "step": step,
                                             "train_loss": float(np.mean(running)) if running else None}
                    if eval_sft:
                        entry["eval_loss"] = eval_loss(model, eval_sft, pad_id, precision, config.eval_batch_size)
                    entry["elapsed_s"] = round(spent + time.perf_counter() - started, 1)
                    history.append(entry)
                    running = []
                    bar.write(json.dumps(entry))
                if epoch_end or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    checkpoint()
                if step >= total:
                    break
        bar.close()
        now = time.perf_counter()
        speed = seen_tokens / (loop_spent + now - loop_started) if step > 0 else None
        return self._finish(out, model, tokenizer, config, precision, train_ds, eval_ds, train_sft, eval_sft,
                            system, history, spent + now - started, speed, data_hash)

    def _finish(self, out: Path, model: Any, tokenizer: Any, config: LoraTrainerConfig, precision: Precision,
                train_ds: Dataset, eval_ds: Dataset | None, train_sft: list[SFTExample],
                eval_sft: list[SFTExample], system: str | None, history: list[dict[str, Any]], train_time: float,
                tokens_per_s: float | None, data_hash: str) -> TrainedModel:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        metrics: dict[str, Any] = {
            "train_examples": len(train_sft), "eval_examples": len(eval_sft),
            "steps": history[-1]["step"] if history else None, "train_time_s": round(train_time, 1),
            "train_tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
            "trainable_params": trainable, "truncated_examples": sum(e.truncated for e in train_sft),
            "device": precision.device, "bf16": precision.bf16, "gradient_checkpointing": precision.checkpointing,
        }
        if history and history[-1].get("train_loss") is not None:
            metrics["train_loss"] = history[-1]["train_loss"]
        if eval_sft:
            metrics["eval_loss"] = history[-1]["eval_loss"] if history and "eval_loss" in history[-1] else \
                eval_loss(model, eval_sft, pad_id=tokenizer.pad_token_id, precision=precision,
                          batch_size=config.eval_batch_size)
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        if eval_sft and eval_ds is not None and config.eval_generate:
            metrics.update(self._generated_metrics(model, tokenizer, config, precision, train_ds, eval_ds,
                                                   train_sft, eval_sft))
        metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if precision.device.startswith("cuda"):
            metrics["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        metrics["history"] = history

        out.mkdir(parents=True, exist_ok=True)
        model.peft_config["default"].base_model_name_or_path = config.base_model
        # adapter_config.json + adapter_model.safetensors with PEFT's key names; the embeddings are never
        # trained, and "auto" would look the base model's config up on the hub
        model.save_pretrained(str(out), save_embedding_layers=False)
        tokenizer.save_pretrained(str(out))
        return finish_model_dir(out, kind="lora", tier_kind="local_lm", task=train_ds.task, config=config,
                                data_hash=data_hash, eval_ds=eval_ds, metrics=metrics,
                                clean_checkpoints=config.clean_checkpoints, manifest_extra={"system_prompt": system})

    @staticmethod
    def _generated_metrics(model: Any, tokenizer: Any, config: LoraTrainerConfig, precision: Precision,
                           train_ds: Dataset, eval_ds: Dataset, train_sft: list[SFTExample],
                           eval_sft: list[SFTExample]) -> dict[str, Any]:
        """Greedy answers to the first `eval_generate` eval examples, scored like `tiergate eval` scores them."""
        from tiergate.evaluate.metrics import Scored, compute_metrics

        n = min(config.eval_generate, len(eval_sft))
        longest = max(len(e.input_ids) - e.prompt_len for e in train_sft)
        preds = greedy_answers(model, tokenizer, [e.prompt_ids for e in eval_sft[:n]], precision,
                               config.eval_batch_size, config.eval_max_new_tokens or longest + 8)
        scored = Scored(task=eval_ds.task, golds=eval_ds.outputs[:n], preds=list(preds),
                        labels=train_ds.labels() if eval_ds.task == "classification" else [])
        found = compute_metrics(scored, GENERATED_METRICS[eval_ds.task])
        return {"generated_examples": n, **{k: v for k, v in found.items() if not isinstance(v, dict)}}
