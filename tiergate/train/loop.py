"""The optimisation loop shared by the encoder trainers (`classifier`, `extractor`): deterministic length-bucketed
batches, AdamW with per-layer learning rates, warmup then decay, gradient clipping, a progress bar, a history
entry per epoch and resumable checkpoints.

    history, seconds = run_training(model, config, out, lengths=lengths, identity=identity,
                                    batch_loss=lambda batch: loss_of(batch), evaluate=val_metrics,
                                    started=time.perf_counter(), on_step=None)

`batch_loss(indices)` returns the loss of one batch of training examples (given by index); `evaluate()` returns
the validation figures logged after each epoch (or None to skip). The model needs an `encoder` (a Hugging Face
model) and a `head` (its parameters get `head_learning_rate`).
"""

from __future__ import annotations

import json
import math
import re
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from tiergate.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tiergate.train.encoder_config import EncoderTrainConfig

StepHook = Callable[[int, float], None]
M = TypeVar("M", bound=torch.nn.Module)


def prepare_encoder(config: EncoderTrainConfig, build: Callable[[torch.nn.Module], M]) -> tuple[M, Any, torch.device]:
    """The common start of an encoder trainer: torch threads and seed from `config`, the base encoder loaded, its
    word embeddings frozen when asked, and `build(encoder)` (the trainable model around it) moved to the device.
    Returns (model, tokenizer, device)."""
    from tiergate.tiers.hf import LOAD_LOCK
    from tiergate.train.classifier_model import load_encoder, resolve_device

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    with LOAD_LOCK:  # module construction races other threads' from_pretrained (see tiers.hf.LOAD_LOCK)
        encoder, tokenizer = load_encoder(config.base_model)
        if config.freeze_word_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]
        model = build(encoder).to(device)
    return model, tokenizer, device


class WeightAverage:
    """An exponential moving average of a model's floating-point weights (decay warmed up as
    min(decay, (1+t)/(10+t)), so early steps do not pin it to the pre-trained weights). `swapped()` puts the
    average into the model for a while (to evaluate it); `apply()` leaves it there."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model, self.decay, self.updates = model, decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = self.model.state_dict()
        for k, v in self.shadow.items():
            v.lerp_(live[k].detach(), 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    def apply(self) -> None:
        self.model.load_state_dict(self.shadow, strict=False)

    def swapped(self, fn: Callable[[], Any]) -> Any:
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in self.shadow}
        self.apply()
        try:
            return fn()
        finally:
            self.model.load_state_dict(live, strict=False)


class DivergenceGuard:
    """Stops a run whose loss is no longer a number: after `patience` optimizer steps in a row with a NaN or
    infinite loss (one can be a mixed-precision overflow the scaler skips; a run of them means the weights are
    gone) it raises a one-line error naming the step and the learning rate, instead of training on for minutes
    and saving a model of NaN weights."""

    def __init__(self, learning_rate: float, patience: int = 3) -> None:
        self.learning_rate, self.patience, self.bad = learning_rate, patience, 0

    def check(self, step: int, loss: float) -> None:
        from tiergate.errors import ConfigError

        self.bad = 0 if math.isfinite(loss) else self.bad + 1
        if self.bad >= self.patience:
            raise ConfigError(f"training diverged: the loss is {loss} at step {step} ({self.bad} steps in a row) with "
                              f"learning_rate {self.learning_rate:g}; lower learning_rate (or set max_grad_norm)")


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, bucketing: bool) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch): resuming recomputes the same order.
    With bucketing, each window of 50 batches is sorted by length before cutting, then batches are shuffled."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths)).tolist()
    if not bucketing:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    window = batch_size * 50
    batches: list[list[int]] = []
    for w in range(0, len(perm), window):
        chunk = sorted(perm[w:w + window], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches)).tolist()
    return [batches[i] for i in order]


def param_groups(model: torch.nn.Module, config: EncoderTrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: the head at head_learning_rate; encoder layer i at lr * decay^(depth-1-i), embeddings at
    lr * decay^depth; no weight decay on biases and norms."""
    depth = int(getattr(model.encoder.config, "num_hidden_layers", 0) or 0)  # type: ignore[union-attr]
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            lr = config.head_learning_rate
        else:
            m = re.search(r"\.layers?\.(\d+)\.", name)
            if m:
                scale = config.layer_lr_decay ** (depth - 1 - int(m.group(1)))
            elif "embeddings" in name:
                scale = config.layer_lr_decay ** depth
            else:
                scale = 1.0
            lr = config.learning_rate * scale
        wd = 0.0 if p.ndim == 1 or "norm" in name.lower() else config.weight_decay
        groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def make_adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW (over parameters or parameter groups) with its fused kernel where torch has one for the parameters'
    device and dtype (CPU and CUDA): the same update in one pass over memory, several times faster on CPU than the
    per-tensor loop (benchmarks/optimizer_step.py)."""
    groups = list(params)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, **kwargs)


def lr_lambda(total: int, warmup: int, schedule: str) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)
    return f


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def total_steps(n_examples: int, config: EncoderTrainConfig) -> tuple[int, int]:
    """(steps per epoch, total steps) of a run over `n_examples`."""
    per_epoch = math.ceil(n_examples / config.batch_size)
    return per_epoch, config.max_steps or max(1, math.ceil(config.epochs * per_epoch))


def run_training(model: torch.nn.Module, config: EncoderTrainConfig, out: Path, *, lengths: list[int],
                 identity: dict[str, Any], batch_loss: Callable[[list[int]], torch.Tensor],
                 evaluate: Callable[[], dict[str, Any]] | None, started: float,
                 on_step: StepHook | None = None) -> tuple[list[dict[str, Any]], float]:
    """Train `model` in place (resuming from OUT/checkpoints when allowed); returns the per-epoch history and
    the training seconds (those of an interrupted run included). With `ema_decay`, the model ends holding the
    weights' moving average, and the per-epoch validation figures are those of the average."""
    from tqdm.auto import tqdm

    per_epoch, total = total_steps(len(lengths), config)
    optimizer = make_adamw(param_groups(model, config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, int(config.warmup_ratio * total), config.lr_schedule))
    identity = {**identity, "total_steps": total}
    average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None

    step, history, spent = 0, [], 0.0
    ckpt = latest_checkpoint(out) if config.resume else None
    if ckpt is not None:
        state, meta = load_checkpoint(ckpt, identity)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if average is not None:
            average.load_state_dict(state["ema"])
        step, history, spent = int(meta["step"]), list(meta.get("history", [])), float(meta.get("elapsed_s", 0.0))

    def checkpoint() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}
        if average is not None:
            state["ema"] = average.state_dict()
        meta = {"identity": identity, "history": history, "elapsed_s": spent + time.perf_counter() - started}
        save_checkpoint(out, step, state, meta, config.keep_checkpoints)

    model.train()
    bar = tqdm(total=total, initial=step, desc=f"train {out.name}", disable=not config.progress, unit="step")
    running: list[float] = []
    guard = DivergenceGuard(config.learning_rate)
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        batches = epoch_batches(lengths, config.batch_size, config.seed, epoch, config.length_bucketing)
        for batch in batches[offset:]:
            loss = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update()
            step += 1
            running.append(loss.item())
            guard.check(step, running[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            if on_step is not None:
                on_step(step, running[-1])
            epoch_end = step % per_epoch == 0 or step == total
            if epoch_end or (config.checkpoint_every and step % config.checkpoint_every == 0):
                if epoch_end:
                    entry: dict[str, Any] = {"epoch": round(step / per_epoch, 3), "step": step,
                                             "train_loss": float(np.mean(running)) if running else None}
                    if config.eval_every_epoch and evaluate is not None:
                        entry.update(evaluate() if average is None else average.swapped(evaluate))
                    entry["elapsed_s"] = round(spent + time.perf_counter() - started, 1)
                    history.append(entry)
                    running = []
                    bar.write(json.dumps(entry))
                checkpoint()
            if step >= total:
                break
    bar.close()
    if average is not None:
        average.apply()
    return history, spent + time.perf_counter() - started
