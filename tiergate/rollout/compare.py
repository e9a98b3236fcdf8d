"""Score a shadow pair: how well the candidate's answer agrees with the primary's, per task.

    compare_answers("classification", "billing", "Billing.", labels=["billing", "technical"])  # 1.0
    compare_answers("extraction", '{"city": "Paris", "date": "May 2"}', '{"city": "paris"}')     # 0.667
    compare_answers("generation", "We received your refund request.", "Your refund request arrived.")

Built on the evaluation harness's own matching (`tiergate.evaluate.metrics.match_label`,
`text_metrics.present_fields` / `parse_json_object`, `rouge_l`), so a shadow pair is judged exactly as an
offline evaluation would judge the candidate against a gold answer:
- classification: 1 when both answers map to the same label (trimmed, case-folded), else 0;
- extraction: field-level F1 of the candidate's JSON fields against the primary's (1 when both are empty);
- generation: ROUGE-L F1 (cheap enough for the request path's observer hook).
A pair agrees when its score reaches `agree_at` (default 1.0 for labels and fields, 0.5 for ROUGE-L).
"""

from __future__ import annotations

from collections.abc import Sequence

from tiergate.evaluate.metrics import INVALID, match_label
from tiergate.evaluate.text_metrics import parse_json_object, present_fields, rouge_l

DEFAULT_AGREE_AT = {"classification": 1.0, "extraction": 1.0, "generation": 0.5}


def _norm_label(answer: str) -> str:
    return answer.strip().strip("\"'`").strip().rstrip(".").strip().casefold()


def label_agreement(reference: str | None, candidate: str | None, labels: Sequence[str] | None = None) -> float:
    if reference is None or candidate is None:
        return 0.0
    if labels:
        ref, cand = match_label(reference, labels), match_label(candidate, labels)
        if ref == INVALID:  # the primary answered outside the label set: compare the text itself
            return float(_norm_label(reference) == _norm_label(candidate))
        return float(ref == cand)
    return float(_norm_label(reference) == _norm_label(candidate))


def field_agreement(reference: str | None, candidate: str | None) -> float:
    """Micro F1 of the candidate's present fields against the primary's (values compared normalised)."""
    ref = present_fields(parse_json_object(reference))
    cand = present_fields(parse_json_object(candidate)) if candidate is not None else {}
    if not ref and not cand:
        # nothing extracted by either: they agree when both are (or both are not) JSON objects
        return float((parse_json_object(reference) is None) == (parse_json_object(candidate) is None))
    tp = sum(1 for k, v in cand.items() if ref.get(k) == v)
    precision = tp / len(cand) if cand else 0.0
    recall = tp / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def compare_answers(task: str | None, reference: str | None, candidate: str | None,
                    labels: Sequence[str] | None = None) -> float:
    """Agreement of `candidate` with `reference` in [0, 1] by the task's comparator (None: classification
    when a label set is known, else generation)."""
    if task is None:
        task = "classification" if labels else "generation"
    if task == "classification":
        return label_agreement(reference, candidate, labels)
    if task == "extraction":
        return field_agreement(reference, candidate)
    if reference is None or candidate is None:
        return 0.0
    return rouge_l(reference, candidate)
