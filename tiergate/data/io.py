"""Reading and writing datasets: CSV, JSONL and (optionally) Hugging Face `datasets`.

JSONL lines are `{"input": str | messages, "output": str | object}`; OpenAI fine-tuning lines
(`{"messages": [..., {"role": "assistant", "content": ...}]}`) are read too, the last assistant message
being the output. Every error names the file and line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tiergate.data.dataset import Dataset, Example, Task, coerce_output, infer_task, input_text
from tiergate.errors import DataError

TEXT_COLUMNS = ("text", "input", "query", "utterance", "sentence", "prompt")
LABEL_COLUMNS = ("label", "output", "category", "intent", "target", "completion")


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Errors met reading a text file become DataErrors naming it: missing, not UTF-8, not valid CSV."""
    try:
        yield
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a file", path=path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from exc
    except csv.Error as exc:
        raise DataError(f"not valid CSV ({exc})", path=path) from exc
    except OSError as exc:
        raise DataError(f"cannot read it ({exc.strerror or exc})", path=path) from exc


def json_lines(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSON-lines file; a line that is not JSON, or a
    file that cannot be read, is a DataError naming the file (and line)."""
    with reading(path), open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", path=path, line=line_no) from exc
            yield line_no, value


def _finish(rows: list[tuple[Any, Any, int]], task: Task | None, path: str) -> Dataset:
    if not rows:
        raise DataError("no examples (empty file)", path=path)
    if task is None:
        objects = [line for _, out, line in rows if isinstance(out, dict)]
        others = [line for _, out, line in rows if not isinstance(out, dict) and not _json_object_text(out)]
        if objects and others:
            raise DataError(f"mixed outputs: {len(objects)} JSON objects (extraction, e.g. line {objects[0]}) and "
                            f"{len(others)} texts (e.g. line {others[0]}); give every example the same kind of "
                            "output, or name the task with --task", path=path)
        task = "extraction" if objects else infer_task([out for _, out, _ in rows])
    examples = [Example(inp, coerce_output(out, task, path, line), line) for inp, out, line in rows]
    return Dataset(examples, task, path=path).validate()


def _json_object_text(value: Any) -> bool:
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except json.JSONDecodeError:
        return False


def _pick(columns: Sequence[str], wanted: str | None, defaults: Sequence[str], what: str, path: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"no {what} column {wanted!r}; columns are {', '.join(columns)}", path=path, line=1)
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise DataError(f"no {what} column (tried {', '.join(defaults)}; name one with --{what}-column); "
                    f"columns are {', '.join(columns)}", path=path, line=1)


def read_csv(path: str | os.PathLike[str], *, text_column: str | None = None, label_column: str | None = None,
             task: Task | None = None, delimiter: str = ",") -> Dataset:
    """Read a CSV with a header row; the text and label (output) columns are named or guessed."""
    p = str(path)
    with reading(p), open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames
        if not columns:
            raise DataError("empty file (no header row)", path=p)
        tcol = _pick(columns, text_column, TEXT_COLUMNS, "text", p)
        lcol = _pick(columns, label_column, LABEL_COLUMNS, "label", p)
        rows: list[tuple[Any, Any, int]] = []
        start = reader.line_num + 1
        for row in reader:
            line = start
            start = reader.line_num + 1
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            text, label = row.get(tcol), row.get(lcol)
            if text is None or label is None:
                raise DataError(f"row has {len(row) - 1 if None in row else len(row)} fields, "
                                f"fewer than the header's {len(columns)}", path=p, line=line)
            if not label.strip():
                raise DataError(f"empty {lcol!r}", path=p, line=line)
            rows.append((text, label.strip(), line))
    return _finish(rows, task, p)


def _check_messages(value: Any, path: str, line: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DataError("messages must be a non-empty list", path=path, line=line)
    for m in value:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError("each message needs 'role' and 'content'", path=path, line=line)
    return value


def _parse_line(obj: Any, path: str, line: int) -> tuple[Any, Any]:
    if not isinstance(obj, dict):
        raise DataError("each line must be a JSON object", path=path, line=line)
    if "input" not in obj and "messages" in obj:
        messages = _check_messages(obj["messages"], path, line)
        if messages[-1].get("role") != "assistant":
            raise DataError("a 'messages' line must end with the assistant's answer", path=path, line=line)
        return messages[:-1], messages[-1]["content"]
    missing = [k for k in ("input", "output") if k not in obj]
    if missing:
        raise DataError(f"missing key {' and '.join(map(repr, missing))} (want {{\"input\": ..., \"output\": ...}})",
                        path=path, line=line)
    inp = obj["input"]
    if not isinstance(inp, str):
        inp = _check_messages(inp, path, line)
    return inp, obj["output"]


def read_jsonl(path: str | os.PathLike[str], *, task: Task | None = None) -> Dataset:
    """Read `{"input": ..., "output": ...}` lines (blank lines are skipped)."""
    p = str(path)
    rows = [(*_parse_line(obj, p, line_no), line_no) for line_no, obj in json_lines(p)]
    return _finish(rows, task, p)


def read_dataset(path: str | os.PathLike[str], *, task: Task | None = None, text_column: str | None = None,
                 label_column: str | None = None) -> Dataset:
    """Read a dataset file by its suffix: .csv / .tsv, or .jsonl / .json (JSON lines)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return read_csv(path, text_column=text_column, label_column=label_column, task=task,
                        delimiter="\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path, task=task)
    raise DataError("unknown dataset format (want .csv, .tsv or .jsonl)", path=str(path))


def read_texts(path: str | os.PathLike[str], *, text_column: str | None = None) -> list[str]:
    """The input texts of a file whose rows need no output, such as examples of out-of-scope requests: a CSV or
    TSV text column (other columns are ignored), JSONL lines with `input` (a text or messages; `output` is
    ignored when present) or `messages`, or a .txt file with one text a line. Blank rows are skipped."""
    p, suffix = str(path), Path(path).suffix.lower()
    texts: list[str] = []
    if suffix in (".csv", ".tsv"):
        with reading(p), open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if not reader.fieldnames:
                raise DataError("empty file (no header row)", path=p)
            tcol = _pick(reader.fieldnames, text_column, TEXT_COLUMNS, "text", p)
            texts = [str(row.get(tcol) or "") for row in reader]
    elif suffix in (".jsonl", ".json", ".ndjson"):
        for line_no, obj in json_lines(p):
            value = obj.get("input", obj.get("messages")) if isinstance(obj, dict) else None
            if not isinstance(value, str | list):
                raise DataError('want an object with "input" (text or messages) or "messages"', path=p, line=line_no)
            texts.append(input_text(_check_messages(value, p, line_no) if isinstance(value, list) else value))
    elif suffix == ".txt":
        with reading(p), open(p, encoding="utf-8") as f:
            texts = f.read().splitlines()
    else:
        raise DataError("unknown format (want .csv, .tsv, .jsonl or .txt)", path=p)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError("no texts (empty file)", path=p)
    return texts


def write_jsonl(dataset: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write one `{"input", "output"}` line per example; creates parent directories."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        for ex in dataset:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    return p


def write_csv(dataset: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a classification dataset as a `text,label` CSV; creates parent directories. The text is each
    input's last user message (what a classifier reads), so a system prompt is not kept: use JSONL for that."""
    if dataset.task != "classification":
        raise DataError(f"CSV holds classification datasets (text, label); write a {dataset.task} dataset "
                        "as JSONL", path=str(path))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for ex in dataset:
            writer.writerow([ex.text, str(ex.output)])
    return p


def load_hf_dataset(name: str, split: str = "train", *, config: str | None = None, text_column: str = "text",
                    label_column: str = "label", task: Task | None = None) -> Dataset:
    """Load a split from the Hugging Face hub (needs the optional `datasets` package and a reachable hub).
    Integer class labels are mapped to their names."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError("loading from the Hugging Face hub needs the `datasets` package (pip install datasets)",
                        path=f"hf://{name}") from exc
    where = f"hf://{name}/{split}"
    try:
        hf = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # hub unreachable, unknown name or split
        raise DataError(f"could not load ({exc})", path=where) from exc
    columns = list(hf.column_names)
    for col, what in ((text_column, "text"), (label_column, "label")):
        if col not in columns:
            raise DataError(f"no {what} column {col!r}; columns are {', '.join(columns)}", path=where)
    names = getattr(hf.features.get(label_column), "names", None)
    rows = []
    for i, row in enumerate(hf):
        label = row[label_column]
        if names is not None and isinstance(label, int):
            label = names[label]
        rows.append((row[text_column], label, i + 1))
    return _finish(rows, task, where)
