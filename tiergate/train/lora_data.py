"""Supervised fine-tuning examples for the `lora` trainer: chat prompt + answer tokens, loss on the answer only.

    system = resolve_system_prompt(config.system_prompt, train_ds)
    sft = encode_dataset(tokenizer, train_ds, system, max_seq_len=1024)
    sft[0].input_ids, sft[0].labels          # labels: -100 over the prompt, the answer's ids (and end of turn)
    input_ids, attention_mask, labels = collate([sft[0], sft[1]], pad_id)

The prompt is the tokenizer's chat template applied to the input messages (a text input is one user message)
with the generation prompt, exactly what the `local_lm` tier feeds the model when it serves the adapter. The
answer is the text the template renders for an assistant turn after that prompt (the output, then the end-of-
turn marker), so the model learns to stop. Extraction outputs are written as compact JSON, labels as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tiergate.data.dataset import Dataset, Example
from tiergate.errors import DataError

IGNORE = -100
"""Label of the positions that carry no loss (prompt and padding): cross-entropy's ignore_index."""


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    """Tokens of the prompt (kept after truncation); the answer starts here."""
    truncated: bool = False

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.prompt_len]


def answer_text(output: Any, task: str) -> str:
    """What the model should answer: compact JSON for an extraction object, the label or text otherwise."""
    if task == "extraction" or isinstance(output, dict | list):
        return json.dumps(output, ensure_ascii=False, separators=(",", ":"))
    return str(output)


def resolve_system_prompt(option: str | None, dataset: Dataset) -> str | None:
    """'auto' -> the task prompt `tiergate eval` sends to a generative tier (labels or fields named); None or
    text as given."""
    if option is None or option.strip().lower() != "auto":
        return option
    from tiergate.evaluate.harness import task_system_prompt

    return task_system_prompt(dataset.task, dataset)


def chat_messages(example: Example, system: str | None) -> list[dict[str, Any]]:
    messages = example.messages
    if system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def _answer_ids(tokenizer: Any, messages: list[dict[str, Any]], prompt_text: str, answer: str) -> list[int]:
    """The answer as the template renders it after the prompt (with its end-of-turn marker); where a template
    does not render the prompt as a prefix of the full chat, the answer followed by EOS."""
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
    if full.startswith(prompt_text) and answer in full[len(prompt_text):]:
        return list(tokenizer.encode(full[len(prompt_text):], add_special_tokens=False))
    ids = list(tokenizer.encode(answer, add_special_tokens=False))
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def encode_example(tokenizer: Any, example: Example, task: str, system: str | None, max_seq_len: int) -> SFTExample:
    messages = chat_messages(example, system)
    try:
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja templates raise their own errors (roles out of order, ...)
        raise DataError(f"the chat template rejected this example's messages: {exc}", line=example.line) from exc
    prompt = list(tokenizer.encode(prompt_text, add_special_tokens=False))
    answer = _answer_ids(tokenizer, messages, prompt_text, answer_text(example.output, task))
    truncated = len(prompt) + len(answer) > max_seq_len
    if truncated:
        # the answer carries the loss: keep it whole where it fits and cut the prompt from the left; but the
        # prompt keeps at least a quarter of the room (all of it when shorter), so a long answer is not
        # learned without the question, and the answer is cut from the right instead
        keep = max(max_seq_len - len(answer), min(len(prompt), max(1, max_seq_len // 4)))
        prompt = prompt[len(prompt) - keep:]
        answer = answer[:max_seq_len - keep]
    return SFTExample(prompt + answer, [IGNORE] * len(prompt) + answer, len(prompt), truncated)


def encode_dataset(tokenizer: Any, dataset: Dataset, system: str | None, max_seq_len: int) -> list[SFTExample]:
    out = []
    for ex in dataset:
        try:
            out.append(encode_example(tokenizer, ex, dataset.task, system, max_seq_len))
        except DataError as exc:
            raise DataError(exc.message, path=dataset.path, line=ex.line) from exc
    return out


def collate(batch: list[SFTExample], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels) tensors of one micro-batch."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return ids, mask, labels


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Left-padded (input_ids, attention_mask) for batched generation."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    return ids, mask
