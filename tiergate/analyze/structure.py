"""What a workload's answers look like: labels, JSON objects or free text, and how repetitive they are.

    s = output_structure(["billing", "refund", "billing", ...])
    s.kind                  # "label" | "json" | "free_text" | "none" (no answers captured)
    s.task                  # "classification" | "extraction" | "generation" (the workload config's words)
    s.answer_entropy_bits   # entropy of the distribution of distinct answers (low: a few answers repeat)

Rules, each figure kept on the result so the call can be checked:
- json: at least `min_share` of the answers parse as a JSON object (or a list of them), code fences allowed;
- label: at least `min_share` of the answers have at most `label_max_words` words, and there are no more
  distinct answers (case and trailing punctuation ignored) than the square root of the answer count: a small
  closed set that repeats;
- free_text: anything else.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["label", "json", "free_text", "none"]
TASKS: dict[str, str] = {"label": "classification", "json": "extraction", "free_text": "generation"}

_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)
_WORD = re.compile(r"\w+", re.U)


def is_json_object(text: str) -> bool:
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        t = m.group(1)
    if not t or t[0] not in "{[":
        return False
    try:
        value = json.loads(t)
    except ValueError:
        return False
    return isinstance(value, dict) or (isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def answer_form(text: str | None, label_max_words: int = 5) -> tuple[float, float, float]:
    """One answer's form as a one-hot (short, JSON object, longer text); zeros when there is no answer."""
    if text is None or not text.strip():
        return (0.0, 0.0, 0.0)
    if is_json_object(text):
        return (0.0, 1.0, 0.0)
    return (1.0, 0.0, 0.0) if len(_WORD.findall(text)) <= label_max_words else (0.0, 0.0, 1.0)


def normalize_answer(text: str) -> str:
    return text.strip().strip("\"'`").rstrip(".!").strip().lower()


def entropy_bits(counts: Iterable[int]) -> float:
    values = [c for c in counts if c > 0]
    total = sum(values)
    if total == 0:
        return 0.0
    return max(0.0, -sum(c / total * math.log2(c / total) for c in values))


@dataclass
class OutputStructure:
    kind: Kind
    answers: int
    distinct_answers: int
    json_share: float
    short_share: float
    median_words: float
    answer_entropy_bits: float
    """Entropy of the distribution of distinct answers: 0 when one answer repeats, log2(n) when all differ."""
    vocab_entropy_bits: float
    """Entropy of the word distribution over all answers: a small, repeated vocabulary scores low."""
    top_answers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def task(self) -> str | None:
        return TASKS.get(self.kind)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["top_answers"] = [list(a) for a in self.top_answers]
        out["task"] = self.task
        return out


def output_structure(answers: Sequence[str | None], *, min_share: float = 0.9, label_max_words: int = 5,
                     top: int = 5) -> OutputStructure:
    texts = [a for a in answers if a is not None and a.strip()]
    n = len(texts)
    if n == 0:
        return OutputStructure("none", 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    norm = Counter(normalize_answer(t) for t in texts)
    word_lists = [_WORD.findall(t.lower()) for t in texts]
    lengths = sorted(len(w) for w in word_lists)
    median = float(lengths[n // 2]) if n % 2 else (lengths[n // 2 - 1] + lengths[n // 2]) / 2.0
    json_share = sum(is_json_object(t) for t in texts) / n
    short_share = sum(length <= label_max_words for length in lengths) / n
    if json_share >= min_share:
        kind: Kind = "json"
    elif short_share >= min_share and len(norm) <= math.sqrt(n):
        kind = "label"
    else:
        kind = "free_text"
    vocab = Counter(w for words in word_lists for w in words)
    return OutputStructure(
        kind=kind, answers=n, distinct_answers=len(norm), json_share=json_share, short_share=short_share,
        median_words=median, answer_entropy_bits=entropy_bits(norm.values()),
        vocab_entropy_bits=entropy_bits(vocab.values()),
        top_answers=norm.most_common(top) if kind == "label" else [],
    )
