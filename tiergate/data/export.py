"""Datasets from captured traffic: a workload's answered requests become `{"input", "output"}` examples.

    ds = export_traffic("sqlite:///tiergate.db", "support-triage", task="classification", since="7d")
    print(ds.meta["export"].describe())      # records read, exported, excluded, skipped, duplicates, PII
    write_jsonl(ds, "data/triage.jsonl")

Which records: the workload's records in `[since, until)` (optionally of one tier) that succeeded and whose
role is in `roles`. The default, `("primary",)`, is the answer each caller got. Errors are always left out.
Shadow copies and cascade first attempts are left out unless named: `tier="frontier", roles=("primary",
"shadow")` exports every answer the frontier gave, live or shadowed, as teacher labels. A `cascade_first`
record is a first answer that its reviewer escalated, so it is rarely worth learning from.

Input: a single user message becomes its text. A system prompt, several turns or non-text content parts keep
the whole message list, so the small model sees what the frontier saw (`example.text` is still the last user
message). Output by task: `classification`, the answer stripped, which must be one short line or, with
`labels`, map onto one of them; `extraction`, the answer parsed as a JSON object (a ```json fence is allowed);
`generation`, the answer text. A record that does not fit is skipped and counted by reason.

Duplicates: inputs equal after whitespace and case folding are exported once, with the latest answer
(records are read newest first, by arrival time). With `scrub_pii`, emails, phone numbers, card and account
numbers in inputs and in extraction and generation outputs become `[EMAIL]`, `[PHONE]`, `[CARD]` and
`[ACCOUNT]` (classification labels are left alone, as in `scrub_dataset`). Duplicates are found after
scrubbing, since the scrubbed text is what gets trained on. `limit` keeps the newest N distinct inputs.
Examples come out oldest first.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tiergate.data.dataset import _MAX_LABEL_CHARS, TASKS, Dataset, Example, Task, input_text
from tiergate.data.pii import scrub_value
from tiergate.data.split import normalize_input
from tiergate.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sqlalchemy import Engine

ROLES = ("primary", "shadow", "cascade_first")
SKIP_REASONS = {
    "no_messages": "no captured messages (capture_messages off)",
    "empty_input": "no user text in the messages",
    "empty_answer": "no answer text (e.g. tool calls)",
    "not_label": "answer is not a one-line label",
    "not_in_labels": "answer matches none of the labels",
    "not_json": "answer is not valid JSON",
    "not_json_object": "answer is JSON but not an object",
}

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S | re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class ExportSummary:
    """What an export read and why records were left out; `dataset.meta["export"]` after `export_traffic`."""

    workload: str
    task: Task
    read: int = 0
    """records of the workload in the window (and tier) that were looked at"""
    exported: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    """records left out by status or role: `error`, `shadow`, `cascade_first`, `primary`"""
    skipped: Counter[str] = field(default_factory=Counter)
    """records of the right role whose messages or answer do not fit the task, by reason (SKIP_REASONS)"""
    duplicates: int = 0
    """records dropped because a later record has the same normalised input"""
    conflicting: int = 0
    """of the duplicates, how many had an answer other than the kept (latest) one"""
    pii_scrubbed: Counter[str] = field(default_factory=Counter)
    """placeholders put into the exported examples, by kind"""
    limited: bool = False
    """the export stopped at `limit`; older records were not read"""
    scrub_pii: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "task": self.task, "read": self.read, "exported": self.exported,
                "excluded": dict(self.excluded), "skipped": dict(self.skipped), "duplicates": self.duplicates,
                "conflicting": self.conflicting, "pii_scrubbed": dict(self.pii_scrubbed) if self.scrub_pii else None,
                "limited": self.limited}

    def describe(self) -> str:
        """The summary as a few lines of text, as `tiergate data export` prints it."""
        lines = [f"records read: {self.read}" + (" (limit reached)" if self.limited else ""),
                 f"exported: {self.exported} ({self.task})",
                 f"excluded (status / role): {_counts(self.excluded)}",
                 f"skipped: {_counts(self.skipped)}",
                 f"duplicates dropped: {self.duplicates} ({self.conflicting} with a different answer)"]
        if self.scrub_pii:
            lines.append(f"PII replaced: {_counts(self.pii_scrubbed)}")
        return "\n".join(lines)


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "none"


def parse_time(value: str | float | datetime | None, option: str = "--since", now: float | None = None
               ) -> float | None:
    """Unix seconds from a unix time, a datetime, an ISO date or time (local time unless it carries an
    offset) or a duration back from now ("30m", "12h", "7d", "2w")."""
    if value is None or isinstance(value, float | int):
        return None if value is None else float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    text = value.strip()
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(text[:-1]) * _UNITS[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise DataError(f"{option} {value!r}: not a date; use an ISO date like 2026-11-01 (or 2026-11-01T09:30) "
                        "or a duration like 12h, 7d, 2w") from None


def parse_json_answer(answer: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as a JSON object (a ```json fence is allowed), or None and the skip reason."""
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None, "not_json"
    if not isinstance(value, dict):
        return None, "not_json_object"
    return value, None


def _plain_text(content: Any) -> str | None:
    """A message's content as text when it is text only (a string, or text parts); else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def record_input(messages: Any) -> str | list[dict[str, Any]] | None:
    """The example input of a record's messages: the text of a lone user message, else the message list."""
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return None
    if len(messages) == 1 and messages[0]["role"] == "user":
        text = _plain_text(messages[0].get("content"))
        if text is not None:
            return text
    return [{"content": None, **m} for m in messages]


def _dedupe_key(value: str | list[dict[str, Any]]) -> str:
    if isinstance(value, str):
        return normalize_input(value)
    parts = []
    for m in value:
        content = m.get("content")
        text = _plain_text(content)
        parts.append(f"{m.get('role')}\x1e" + (text if text is not None else json.dumps(content, sort_keys=True)))
    return normalize_input("\x1f".join(parts))


def _output(answer: Any, task: Task, labels: Sequence[str] | None) -> tuple[Any, str | None]:
    if not isinstance(answer, str) or not answer.strip():
        return None, "empty_answer"
    if task == "classification":
        from tiergate.evaluate.metrics import INVALID, clean_label, match_label

        if labels:
            label = match_label(answer.strip(), labels)
            return (None, "not_in_labels") if label == INVALID else (label, None)
        label = clean_label(answer)  # "billing." and "billing" are one class, as the evaluation harness sees them
        if not label or "\n" in label or len(label) > _MAX_LABEL_CHARS:
            return None, "not_label"
        return label, None
    if task == "extraction":
        return parse_json_answer(answer)
    return answer, None


def _open(store: str | Engine) -> tuple[Engine, bool]:
    """An engine for a URL (opened here, so disposed by the caller) or the engine given."""
    if not isinstance(store, str):
        return store, False
    from tiergate.store.db import open_store

    return open_store(store, create=False), True


def _describe_window(since: float | None, until: float | None, tier: str | None) -> str:
    def fmt(t: float) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")

    parts = []
    if tier is not None:
        parts.append(f"on tier {tier!r}")
    if since is not None:
        parts.append(f"since {fmt(since)}")
    if until is not None:
        parts.append(f"before {fmt(until)}")
    return "".join(" " + p for p in parts)


def export_traffic(
    store: str | Engine,
    workload: str,
    *,
    task: Task,
    since: str | float | datetime | None = None,
    until: str | float | datetime | None = None,
    tier: str | None = None,
    roles: Sequence[str] = ("primary",),
    labels: Sequence[str] | None = None,
    scrub_pii: bool = False,
    dedupe: bool = True,
    limit: int | None = None,
) -> Dataset:
    """A validated dataset of `workload`'s captured answers; the summary is `dataset.meta["export"]`.

    `store` is a store URL or an engine. `since`/`until` are unix seconds, datetimes, ISO dates or durations
    back from now; `until` is exclusive. `roles` picks which records count as answers (see the module
    docstring); `labels` maps classification answers onto a label set (others are skipped). Raises DataError
    when the workload has no records, none fit, or the result is not a valid dataset (e.g. one class only).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError(f"roles must be some of {', '.join(ROLES)}, got {', '.join(unknown) or 'none'}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and start >= end:
        raise DataError(f"--since ({since}) must come before --until ({until})")

    from tiergate.store.records import count_records, iter_records, workload_names

    engine, owned = _open(store)
    try:
        summary = ExportSummary(workload, task, scrub_pii=scrub_pii)
        kept: dict[str, tuple[Any, Any]] = {}   # dedupe key -> (input, output) of the latest record
        order: list[str] = []
        rows = iter_records(engine, workload=workload, tier=tier, since=start, until=end, newest_first=True,
                            by_time=True)
        with closing(rows):
            for rec in rows:
                summary.read += 1
                if rec["status"] != "ok":
                    summary.excluded["error"] += 1
                    continue
                if rec["role"] not in roles:
                    summary.excluded[rec["role"]] += 1
                    continue
                reason = _add(rec, task, labels, scrub_pii, dedupe, kept, order, summary)
                if reason is not None:
                    summary.skipped[reason] += 1
                elif limit is not None and len(order) >= limit:
                    summary.limited = True
                    break
        if summary.read == 0:
            if count_records(engine, workload=workload) == 0:
                known = workload_names(engine)
                raise DataError(f"no captured requests for workload {workload!r}; the store has "
                                + (f"workloads {', '.join(known)}" if known else "no records at all"))
            raise DataError(f"workload {workload!r} has no captured requests"
                            f"{_describe_window(start, end, tier)}")
    finally:
        if owned:
            engine.dispose()
    if not order:
        raise DataError(f"workload {workload!r}: none of the {summary.read} records"
                        f"{_describe_window(start, end, tier)} gave a {task} example (excluded: {_counts(summary.excluded)}; skipped: "
                        f"{_counts(summary.skipped)})")
    examples = [Example(kept[k][0], kept[k][1], i + 1) for i, k in enumerate(reversed(order))]
    summary.exported = len(examples)
    meta: dict[str, Any] = {"export": summary, "source": f"traffic:{workload}"}
    if scrub_pii:
        meta["pii_scrubbed"] = dict(summary.pii_scrubbed)
    return Dataset(examples, task, path=f"traffic:{workload}", meta=meta).validate()


def _add(rec: dict[str, Any], task: Task, labels: Sequence[str] | None, scrub_pii: bool, dedupe: bool,
         kept: dict[str, tuple[Any, Any]], order: list[str], summary: ExportSummary) -> str | None:
    """Turn one record into an example and keep it unless a later one has the same input; returns the skip
    reason, or None."""
    if rec.get("messages") is None:
        return "no_messages"
    inp = record_input(rec["messages"])
    if inp is None:
        return "no_messages"
    if not input_text(inp).strip():
        return "empty_input"
    out, reason = _output(rec.get("answer"), task, labels)
    if reason is not None:
        return reason
    found: Counter[str] = Counter()
    if scrub_pii:
        inp, found = scrub_value(inp)
        if task != "classification":
            out, more = scrub_value(out)
            found.update(more)
    key = _dedupe_key(inp) if dedupe else str(len(order))
    if key in kept:
        summary.duplicates += 1
        summary.conflicting += kept[key][1] != out
        return None
    kept[key] = (inp, out)
    order.append(key)
    summary.pii_scrubbed.update(found)
    return None
