"""Hallucination checks on small-model answers: pure functions of (task, label set / schema, input, answer).

    check_answer(CheckSpec(task="classification", labels=["billing", "technical"]), "charged twice", "refunds")
    # -> ["label_outside_set"]
    check_answer(CheckSpec(task="extraction", schema={"type": "object", "required": ["city"]}),
                 "Book a table in Paris", '{"city": "London"}')
    # -> ["value_not_in_input:city"]

Flags (stable strings; the part before ":" is what gets counted):
- `label_outside_set`: a classification answer that is none of the workload's labels;
- `invalid_json`: an extraction answer that is no JSON object;
- `schema:<path>: <problem>`: the JSON breaks the workload's schema (a JSON Schema subset: type, required,
  properties, additionalProperties, enum, items, minimum/maximum, minLength/maxLength, pattern);
- `value_not_in_input:<field>`: an extracted string value that does not occur in the input text;
- `out_of_scope`: the small model answered a request it should not have: its confidence is below
  `min_confidence`, or the input's similarity to the training data is below `min_similarity`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tiergate.evaluate.metrics import INVALID, match_label
from tiergate.evaluate.text_metrics import parse_json_object
from tiergate.monitor.config import CheckSpec

__all__ = ["CheckSpec", "check_answer", "label_outside_set", "values_not_in_input", "schema_errors",
           "answered_out_of_scope", "flag_kinds"]


def _ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def label_outside_set(answer: str | None, labels: Sequence[str]) -> bool:
    return bool(labels) and match_label(answer, labels) == INVALID


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")]
    return [(path, value)]


def values_not_in_input(obj: dict[str, Any], input_text: str) -> list[str]:
    """Fields whose string (or number) value does not occur in the input, compared case- and space-folded."""
    haystack = _ws(input_text)
    digits = re.sub(r"\D", "", input_text)
    missing = []
    for path, value in _leaves(obj, ""):
        if value is None or isinstance(value, bool) or value == "":
            continue
        if isinstance(value, int | float):
            text = str(value).removesuffix(".0")
            if text not in haystack and re.sub(r"\D", "", text) not in digits:
                missing.append(path)
        elif isinstance(value, str) and _ws(value) not in haystack:
            missing.append(path)
    return missing


_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "number": (int, float), "integer": (int,), "boolean": (bool,),
                                       "null": (type(None),)}


def _is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Violations of a JSON Schema subset, each as 'path: problem'."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in names):
            return [f"{path}: expected {'/'.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing required field {name!r}")
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name in value:
                errors.extend(schema_errors(value[name], sub, f"{path}.{name}"))
        extra = schema.get("additionalProperties", True)
        for name in value:
            if name in props:
                continue
            if extra is False:
                errors.append(f"{path}: unexpected field {name!r}")
            elif isinstance(extra, dict):
                errors.extend(schema_errors(value[name], extra, f"{path}.{name}"))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(schema_errors(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: length {len(value)} outside the allowed range")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: does not match {schema['pattern']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    return errors


def answered_out_of_scope(*, confidence: float | None = None, min_confidence: float | None = None,
                          similarity: float | None = None, min_similarity: float | None = None) -> bool:
    """True when a signal that is known says the request was out of the model's scope."""
    if confidence is not None and min_confidence is not None and confidence < min_confidence:
        return True
    return similarity is not None and min_similarity is not None and similarity < min_similarity


def check_answer(spec: CheckSpec, input_text: str, answer: str | None, *, confidence: float | None = None,
                 similarity: float | None = None, task: str | None = None) -> list[str]:
    """Every flag the answer earns (empty: nothing suspicious). A missing answer is not checked."""
    if answer is None:
        return []
    flags: list[str] = []
    task = spec.task or task
    if task == "classification" and spec.labels and label_outside_set(answer, spec.labels):
        flags.append("label_outside_set")
    elif task == "extraction":
        obj = parse_json_object(answer)
        if obj is None:
            flags.append("invalid_json")
        else:
            if spec.json_schema is not None:
                flags.extend(f"schema:{e}" for e in schema_errors(obj, spec.json_schema))
            if spec.values_in_input:
                flags.extend(f"value_not_in_input:{p}" for p in values_not_in_input(obj, input_text))
    if answered_out_of_scope(confidence=confidence, min_confidence=spec.min_confidence, similarity=similarity,
                             min_similarity=spec.min_similarity):
        flags.append("out_of_scope")
    return flags


def flag_kinds(flags: Sequence[str]) -> list[str]:
    """The counted kind of each flag ('schema:$.x: ...' -> 'schema')."""
    return [f.split(":", 1)[0] for f in flags]
