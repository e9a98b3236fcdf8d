"""The fine-tuned encoder tagger: the torch module, its artifact layout and the predictor that serves it.

Artifact directory (written by `save_extractor`, read by `ExtractorPredictor.load`):

    encoder/                  Hugging Face encoder weights, config and (fast) tokenizer (save_pretrained)
    head.safetensors          the tagging head (weight [fields * 3, hidden], bias [fields * 3])
    fields.json               field names, index = field id
    extractor.json            max_seq_len, use_context, tagging scheme
    calibration.json          temperature of the tag probabilities, ECE before and after
    metrics.json              validation metrics, encoding counts and per-epoch history
    tiergate-model.json       the manifest (tiergate.train.manifest)

Importing this module imports torch; the tier and the trainer import it only when they need it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tiergate.errors import NotFound
from tiergate.tiers.hf import serialized
from tiergate.train.classifier_model import pad_batch, resolve_device
from tiergate.train.extractor_data import (
    IGNORE,
    Encoded,
    SpanValue,
    answer_json,
    decode_fields,
    encode_inputs,
)

SCHEME = "bio-per-field"


class EncoderTagger(nn.Module):
    """An encoder and a linear head giving each token O/B/I logits for every field: [batch, tokens, fields, 3]."""

    def __init__(self, encoder: nn.Module, num_fields: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_fields = num_fields
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_fields * 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        logits = self.head(self.dropout(states))
        return logits.view(*logits.shape[:2], self.num_fields, 3)  # type: ignore[no-any-return]


def collate(batch: Sequence[Encoded], pad_id: int, device: torch.device, with_tags: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(input_ids, attention_mask, token_type_ids or None, tags [B, T, F] or None) on `device`."""
    input_ids, mask = pad_batch([e.input_ids for e in batch], pad_id)
    types = None
    if batch[0].token_type_ids is not None:
        types, _ = pad_batch([e.token_type_ids or [] for e in batch], 0)
        types = types.to(device)
    tags = None
    if with_tags:
        num_fields = len(batch[0].tags[0]) if batch[0].tags else 0
        tags = torch.full((len(batch), input_ids.shape[1], num_fields), IGNORE, dtype=torch.long)
        for i, e in enumerate(batch):
            tags[i, : len(e.tags)] = torch.tensor(e.tags, dtype=torch.long).view(len(e.tags), num_fields)
        tags = tags.to(device)
    return input_ids.to(device), mask.to(device), types, tags


@torch.inference_mode()
def tag_logits(model: EncoderTagger, encoded: Sequence[Encoded], pad_id: int, batch_size: int,
               device: torch.device) -> list[np.ndarray]:
    """Per example, the [tokens, fields, 3] tag logits (in input order; batched by length)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    out: list[np.ndarray] = [np.zeros((0, model.num_fields, 3), dtype=np.float32)] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, mask, types, _ = collate([encoded[i] for i in chunk], pad_id, device)
        logits = model(input_ids, mask, types).float().cpu().numpy()
        for row, i in enumerate(chunk):
            out[i] = logits[row, : len(encoded[i].input_ids)]
    model.train(was_training)
    return out


def tag_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    from tiergate.train.calibration import softmax

    return softmax(logits, temperature)


def save_extractor(out: Path, model: EncoderTagger, tokenizer: Any, fields: list[str], settings: dict[str, Any],
                   temperature: float, calibration: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out / "encoder")  # type: ignore[operator]
    tokenizer.save_pretrained(out / "encoder")
    head = {"weight": model.head.weight.detach().cpu().contiguous(), "bias": model.head.bias.detach().cpu().contiguous()}
    save_file(head, str(out / "head.safetensors"))
    (out / "fields.json").write_text(json.dumps(fields, indent=1, ensure_ascii=False) + "\n")
    (out / "extractor.json").write_text(json.dumps({"scheme": SCHEME, **settings}, indent=2) + "\n")
    (out / "calibration.json").write_text(json.dumps({"temperature": temperature, **calibration}, indent=2) + "\n")


@dataclass
class Extraction:
    fields: dict[str, SpanValue]
    confidence: float
    """The answer's confidence (see `decode_fields`): what a cascade compares with its threshold."""
    answer: str
    """The compact JSON object of the extracted values."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens of `answer` (for a tier priced per token)."""


class ExtractorPredictor:
    """A saved extractor, ready to extract fields from (context, text) inputs. Not thread-safe: one caller at a
    time (the extractor tier serialises calls through its batching thread)."""

    def __init__(self, model: EncoderTagger, tokenizer: Any, fields: list[str], settings: dict[str, Any],
                 temperature: float, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.fields = fields
        self.settings = settings
        self.temperature = temperature
        self.device = device
        self.max_seq_len = int(settings.get("max_seq_len", 64))
        self.use_context = bool(settings.get("use_context", True))

    @classmethod
    @serialized  # the transformers imports too: their lazy first resolution races other loading threads
    def load(cls, model_dir: str | Path, device: str = "auto") -> ExtractorPredictor:
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        d = Path(model_dir)
        if not (d / "extractor.json").is_file() or not (d / "head.safetensors").is_file():
            raise NotFound(f"{d}: not a tiergate extractor (no extractor.json / head.safetensors)")
        fields = json.loads((d / "fields.json").read_text())
        settings = json.loads((d / "extractor.json").read_text())
        calibration = json.loads((d / "calibration.json").read_text())
        encoder = AutoModel.from_pretrained(str(d / "encoder"))
        tokenizer = AutoTokenizer.from_pretrained(str(d / "encoder"))
        model = EncoderTagger(encoder, len(fields), 0.0)
        model.head.load_state_dict(load_file(str(d / "head.safetensors")))
        return cls(model, tokenizer, fields, settings, float(calibration.get("temperature", 1.0)),
                   resolve_device(device))

    def encode(self, inputs: Sequence[tuple[str, str]]) -> list[Encoded]:
        if not self.use_context:
            inputs = [("", text) for _, text in inputs]
        return encode_inputs(self.tokenizer, inputs, self.max_seq_len)

    def extract(self, inputs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[Extraction]:
        """Extract the fields of each (context, user text) input; values are exact substrings of the text."""
        if not inputs:
            return []
        encoded = self.encode(inputs)
        logits = tag_logits(self.model, encoded, self.tokenizer.pad_token_id or 0, batch_size, self.device)
        out = []
        for enc, lg in zip(encoded, logits, strict=True):
            spans, confidence = decode_fields(tag_probs(lg, self.temperature), enc, self.fields)
            answer = answer_json(spans, self.fields)
            n_answer = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
            out.append(Extraction(spans, confidence, answer, len(enc.input_ids), n_answer))
        return out
