"""The example and dataset value classes, task types and per-task validation."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tiergate.errors import DataError

Task = Literal["classification", "extraction", "generation"]
TASKS: tuple[Task, ...] = ("classification", "extraction", "generation")

# A label is a short single line; outputs beyond this look like generated text.
_MAX_LABEL_CHARS = 64


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def input_text(value: str | list[dict[str, Any]]) -> str:
    """The text a small model reads: the input itself, or the last user message of a chat."""
    if isinstance(value, str):
        return value
    for message in reversed(value):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def context_text(value: str | list[dict[str, Any]]) -> str:
    """The context a chat input gives its last user message: the text of its system messages, one per line
    ("" for a text input or a chat without one). The extractor encodes it as the first segment of a text pair."""
    if isinstance(value, str):
        return ""
    return "\n".join(t for m in value if m.get("role") == "system" and (t := _content_text(m.get("content"))))


@dataclass(frozen=True)
class Example:
    """One dataset row: `input` (text or chat messages) and `output` (label, text or JSON object)."""

    input: str | list[dict[str, Any]]
    output: Any
    line: int | None = None
    """Line of the source file this example came from (1-based; CSV counts the header as line 1)."""

    @property
    def text(self) -> str:
        return input_text(self.input)

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return list(self.input)

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output}


@dataclass
class Dataset:
    """A list of examples of one task, with the file they came from (for error messages)."""

    examples: list[Example]
    task: Task
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def texts(self) -> list[str]:
        return [ex.text for ex in self.examples]

    @property
    def outputs(self) -> list[Any]:
        return [ex.output for ex in self.examples]

    def labels(self) -> list[str]:
        """Sorted label set (classification)."""
        return sorted({str(ex.output) for ex in self.examples})

    def label_counts(self) -> Counter[str]:
        return Counter(str(ex.output) for ex in self.examples)

    def subset(self, indices: Sequence[int], path: str | None = None) -> Dataset:
        return replace(self, examples=[self.examples[i] for i in indices], path=path or self.path)

    def data_hash(self) -> str:
        """sha256 of the canonical JSON lines: same examples in the same order, same hash."""
        h = hashlib.sha256()
        h.update(self.task.encode())
        for ex in self.examples:
            h.update(b"\n")
            h.update(json.dumps(ex.to_json(), sort_keys=True, ensure_ascii=False).encode())
        return "sha256:" + h.hexdigest()

    def validate(self) -> Dataset:
        """Check the examples fit the task; raise DataError naming the file and line of the first misfit."""
        if not self.examples:
            raise DataError("no examples", path=self.path)
        for ex in self.examples:
            if not ex.text.strip():
                raise DataError("empty input (no text, or no user message)", path=self.path, line=ex.line)
            if self.task == "classification":
                if not isinstance(ex.output, str | int | bool) or not str(ex.output).strip():
                    raise DataError(f"classification output must be a label string, got {ex.output!r}",
                                    path=self.path, line=ex.line)
            elif self.task == "extraction":
                if not isinstance(ex.output, dict):
                    raise DataError("extraction output must be a JSON object of named fields",
                                    path=self.path, line=ex.line)
            elif not isinstance(ex.output, str):
                raise DataError("generation output must be a string", path=self.path, line=ex.line)
        if self.task == "classification":
            counts = self.label_counts()
            if len(counts) < 2:
                only = next(iter(counts))
                raise DataError(f"classification needs at least two classes; every example is {only!r}",
                                path=self.path)
        return self


def coerce_output(output: Any, task: Task, path: str | None, line: int | None) -> Any:
    """Extraction outputs may arrive as JSON text; labels are kept as strings."""
    if task == "extraction" and isinstance(output, str):
        try:
            output = json.loads(output)
        except json.JSONDecodeError as exc:
            raise DataError(f"extraction output is not a JSON object: {exc.msg}", path=path, line=line) from exc
    if task == "classification" and isinstance(output, int | bool):
        output = str(output)
    return output


def infer_task(outputs: Sequence[Any]) -> Task:
    """Objects -> extraction; few distinct short one-line strings -> classification; else generation."""
    if outputs and all(isinstance(o, dict) for o in outputs):
        return "extraction"
    strings = [str(o) for o in outputs]
    distinct = set(strings)
    short = all(len(s) <= _MAX_LABEL_CHARS and "\n" not in s for s in strings)
    if short and 2 <= len(distinct) <= max(2, len(strings) // 2):
        return "classification"
    return "generation"
