"""Simple prompt features beside the embedding, for learned routers: length, digits, question words, code."""

from __future__ import annotations

import math
import re

import numpy as np

FEATURE_NAMES = ["log_chars", "log_words", "log_lines", "digit_share", "upper_share", "punct_share",
                 "non_ascii_share", "questions", "question_words", "reasoning_words", "code_markers",
                 "mean_word_len"]

_QUESTION_WORDS = re.compile(r"(?i)\b(?:what|why|how|when|where|which|who|whom|whose|can|could|should|would|is|"
                             r"are|does|do)\b")
_REASONING_WORDS = re.compile(r"(?i)\b(?:explain|compare|analy[sz]e|prove|derive|step by step|reason|evaluate|"
                              r"summari[sz]e|translate|write|design|plan|calculate|solve|justify|pros and cons)\b")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]|=>|\bSELECT\b|</?\w+>")
_WORD = re.compile(r"\w+")


def prompt_features(text: str) -> list[float]:
    n = len(text)
    words = _WORD.findall(text)
    if n == 0:
        return [0.0] * len(FEATURE_NAMES)
    return [
        math.log1p(n),
        math.log1p(len(words)),
        math.log1p(text.count("\n")),
        sum(ch.isdigit() for ch in text) / n,
        sum(ch.isupper() for ch in text) / n,
        sum(not ch.isalnum() and not ch.isspace() for ch in text) / n,
        sum(ord(ch) > 127 for ch in text) / n,
        min(5.0, float(text.count("?"))),
        min(10.0, float(len(_QUESTION_WORDS.findall(text)))),
        min(10.0, float(len(_REASONING_WORDS.findall(text)))),
        min(10.0, float(len(_CODE.findall(text)))),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
    ]


def feature_matrix(texts: list[str]) -> np.ndarray:
    return np.array([prompt_features(t) for t in texts], dtype=np.float32).reshape(len(texts), len(FEATURE_NAMES))
