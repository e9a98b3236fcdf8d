"""Extraction examples as token tags, and tags back to values: the data side of the `extractor` trainer.

    fields = field_names(train_ds)                                   # ["date", "people", "time"]
    encoded, stats = encode_dataset(tokenizer, train_ds, fields, max_seq_len=64)
    encoded[0].tags[t][f]        # O / B / I of token t for field f (IGNORE outside the user text)
    spans, confidence = decode_fields(probs, encoded[0], fields)     # probs: [tokens, fields, 3]

Each field has its own O/B/I tags, so two fields may share a span ("in an hour" is both a date and a time).
The input is the example's last user message; the system messages before it (e.g. "requested slots: time")
are the first segment of a text pair, and only the user text is tagged (the fast tokenizer's offset mapping
ties each token to its characters). A value is found in the text as written (else ignoring case); a value that
is not in the text cannot be tagged: it is skipped and counted (`values_not_in_text`), like values that are
not text (lists, objects) and values cut off by `max_seq_len`. Decoding picks, per field, the single span of
tokens (or none) with the highest probability, and returns its exact characters from the input.

No torch here: numpy and a tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tiergate.data.dataset import Dataset, Example, context_text, input_text
from tiergate.errors import ConfigError

O, B, I = 0, 1, 2  # noqa: E741 - the standard names of the BIO tags
TAGS = ("O", "B", "I")
IGNORE = -100
"""Tag of tokens outside the user text (special tokens, the context segment, padding): no loss there."""


def is_present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def field_names(dataset: Dataset) -> list[str]:
    """The fields that have a value in at least one example, sorted."""
    return sorted({k for ex in dataset if isinstance(ex.output, dict) for k, v in ex.output.items() if is_present(v)})


def field_signature(ex: Example) -> str:
    """Which fields an example has ("date,time"; "" for none): the strata of a stratified split."""
    out = ex.output if isinstance(ex.output, dict) else {}
    return ",".join(sorted(k for k, v in out.items() if is_present(v)))


def value_text(value: Any) -> str | None:
    """A field value as the text to look for in the input; None for values that cannot be text spans."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return json.dumps(value)


def find_span(text: str, value: str) -> tuple[int, int] | None:
    """[start, end) of the first occurrence of `value` in `text`: as written, else ignoring case."""
    if not value:
        return None
    at = text.find(value)
    if at < 0 and len(text.lower()) == len(text):
        at = text.lower().find(value.lower())
    return (at, at + len(value)) if at >= 0 else None


@dataclass
class EncodingStats:
    """What the tagging could and could not represent, counted over a dataset's field values."""

    examples: int = 0
    values: int = 0
    tagged: int = 0
    values_not_in_text: int = 0
    values_not_text: int = 0
    values_truncated: int = 0
    values_off_token_boundary: int = 0
    """Tagged, but the value starts or ends inside a token: the model can only return the whole tokens."""
    unknown_fields: int = 0
    """Values of fields the model was not trained on (eval data only)."""
    examples_truncated: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Encoded:
    """One tokenised example: ids, which tokens are user text and their character offsets, and the tags."""

    text: str
    input_ids: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int]]
    user: list[int]
    """Positions of the user-text tokens, in order."""
    tags: list[list[int]] = field(default_factory=list)
    """[token][field] tag; empty when encoded for inference."""


def split_input(ex_input: str | list[dict[str, Any]], use_context: bool = True) -> tuple[str, str]:
    """(context, user text) of an input; the context is "" for plain text or when `use_context` is off."""
    return (context_text(ex_input) if use_context else ""), input_text(ex_input)


def encode_inputs(tokenizer: Any, inputs: Sequence[tuple[str, str]], max_seq_len: int) -> list[Encoded]:
    """Tokenise (context, text) pairs: a text pair when there is a context, the text alone otherwise."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"the extractor needs a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                          "is not one")
    out: list[Encoded | None] = [None] * len(inputs)
    for paired in (True, False):
        idx = [i for i, (ctx, _) in enumerate(inputs) if bool(ctx) == paired]
        if not idx:
            continue
        texts = [inputs[i][1] for i in idx]
        args = ([inputs[i][0] for i in idx], texts) if paired else (texts,)
        enc = tokenizer(*args, truncation=True, max_length=max_seq_len, return_offsets_mapping=True)
        types = enc.get("token_type_ids")
        for j, i in enumerate(idx):
            seq = enc.sequence_ids(j)
            user_seq = 1 if paired else 0
            user = [t for t, s in enumerate(seq) if s == user_seq]
            out[i] = Encoded(text=texts[j], input_ids=list(enc["input_ids"][j]),
                             token_type_ids=list(types[j]) if types is not None else None,
                             offsets=[tuple(o) for o in enc["offset_mapping"][j]], user=user)
    return [e for e in out if e is not None]


def tag_example(enc: Encoded, output: dict[str, Any], fields: Sequence[str], stats: EncodingStats) -> None:
    """Fill `enc.tags` from the example's output, counting what cannot be tagged."""
    index = {f: k for k, f in enumerate(fields)}
    tags = [[IGNORE] * len(fields) for _ in enc.input_ids]
    for t in enc.user:
        tags[t] = [O] * len(fields)
    for name, value in output.items():
        if not is_present(value):
            continue
        stats.values += 1
        if name not in index:
            stats.unknown_fields += 1
            continue
        text_value = value_text(value)
        if text_value is None:
            stats.values_not_text += 1
            continue
        span = find_span(enc.text, text_value)
        if span is None:
            stats.values_not_in_text += 1
            continue
        start, end = span
        covered = [t for t in enc.user if enc.offsets[t][0] < end and enc.offsets[t][1] > start]
        if not covered:
            stats.values_truncated += 1
            continue
        if enc.offsets[covered[0]][0] != start or enc.offsets[covered[-1]][1] != end:
            stats.values_off_token_boundary += 1
        k = index[name]
        tags[covered[0]][k] = B
        for t in covered[1:]:
            tags[t][k] = I
        stats.tagged += 1
    enc.tags = tags


def encode_dataset(tokenizer: Any, dataset: Dataset, fields: Sequence[str], max_seq_len: int,
                   use_context: bool = True) -> tuple[list[Encoded], EncodingStats]:
    """Tokenise and tag every example of an extraction dataset (outputs must be JSON objects)."""
    inputs = [split_input(ex.input, use_context) for ex in dataset]
    encoded = encode_inputs(tokenizer, inputs, max_seq_len)
    stats = EncodingStats(examples=len(encoded))
    for enc, ex in zip(encoded, dataset, strict=True):
        tag_example(enc, ex.output, fields, stats)
        if enc.user and enc.offsets[enc.user[-1]][1] < len(enc.text.rstrip()):
            stats.examples_truncated += 1
    return encoded, stats


@dataclass
class SpanValue:
    value: str
    """The exact characters of the input."""
    confidence: float
    """Mean probability of the span's tags (B then I...)."""
    start: int
    end: int


def decode_fields(probs: np.ndarray, enc: Encoded, fields: Sequence[str]) -> tuple[dict[str, SpanValue], float]:
    """Per field, the highest-probability single span of user tokens (B then Is, O elsewhere) or none; and the
    answer's confidence: the lowest of each extracted field's confidence and, for a field left empty, its
    least certain O (the user token most likely to have started a value)."""
    spans: dict[str, SpanValue] = {}
    if not enc.user:
        return spans, 1.0
    user = np.asarray(enc.user)
    p = np.clip(probs[user].astype(np.float64), 1e-12, 1.0)  # [n, F, 3]
    logp = np.log(p)
    confidence = 1.0
    for k, name in enumerate(fields):
        gain_b = logp[:, k, B] - logp[:, k, O]
        gain_i = logp[:, k, I] - logp[:, k, O]
        best, best_span = 0.0, None
        cur, cur_start = -np.inf, 0
        for t in range(len(user)):
            if cur + gain_i[t] > gain_b[t]:
                cur += gain_i[t]
            else:
                cur, cur_start = gain_b[t], t
            if cur > best:
                best, best_span = cur, (cur_start, t)
        if best_span is None:
            confidence = min(confidence, float(p[:, k, O].min()))
            continue
        s, e = best_span
        tag_probs = [p[s, k, B], *(p[t, k, I] for t in range(s + 1, e + 1))]
        start, end = enc.offsets[user[s]][0], enc.offsets[user[e]][1]
        conf = float(np.mean(tag_probs))
        spans[name] = SpanValue(enc.text[start:end], conf, int(start), int(end))
        confidence = min(confidence, conf)
    return spans, confidence


def answer_json(spans: dict[str, SpanValue], fields: Sequence[str]) -> str:
    """The compact JSON object of the extracted fields (in field order; absent fields left out)."""
    return json.dumps({f: spans[f].value for f in fields if f in spans}, ensure_ascii=False, separators=(",", ":"))
