"""Outcomes: per-prompt quality (and cost) of two or more tiers, what learned routers train and are scored on.

JSONL, one prompt a line (costs optional; absent costs come from `fill_costs`):

    {"prompt": "where is my card?", "scores": {"small": 1.0, "frontier": 1.0}, "costs": {"small": 0.0001, "frontier": 0.002}}

CSV, a header row with a `prompt` column and one score column per tier; a `cost:TIER` column gives that tier's
cost (a `score:TIER` column name is read as TIER too):

    prompt,small,frontier,cost:small,cost:frontier

    outcomes = read_outcomes("outcomes.jsonl")       # DataError names the file and line of a bad row
    outcomes.tiers, outcomes.scores("small"), outcomes.costs("frontier")
    write_outcomes(outcomes, "outcomes.csv")
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.data.io import json_lines, reading
from tiergate.errors import DataError


@dataclass(frozen=True)
class Outcome:
    prompt: str
    scores: dict[str, float]
    costs: dict[str, float] | None = None
    line: int | None = None


@dataclass
class Outcomes:
    """Outcomes of one set of prompts; every row scores the same tiers."""

    rows: list[Outcome]
    tiers: list[str]
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self.rows)

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.rows]

    def scores(self, tier: str) -> np.ndarray:
        return np.array([r.scores[tier] for r in self.rows], dtype=np.float64)

    def costs(self, tier: str) -> np.ndarray:
        """Per-prompt cost of `tier`; DataError when some row has no cost for it (see `fill_costs`)."""
        out = np.empty(len(self.rows), dtype=np.float64)
        for i, r in enumerate(self.rows):
            if r.costs is None or tier not in r.costs:
                raise DataError(f"no cost for tier {tier!r} (give costs in the file, or prices with --cost / "
                                "--price)", path=self.path, line=r.line)
            out[i] = r.costs[tier]
        return out

    def has_costs(self) -> bool:
        return all(r.costs is not None and all(t in r.costs for t in self.tiers) for r in self.rows)

    def subset(self, indices: Any) -> Outcomes:
        return replace(self, rows=[self.rows[int(i)] for i in indices])

    def order_tiers(self, small: str | None = None, large: str | None = None) -> tuple[str, str]:
        """(small, large): named ones, else the cheaper / lower-scoring tier is `small` (two tiers only)."""
        for name in (small, large):
            if name is not None and name not in self.tiers:
                raise DataError(f"tier {name!r} is not in the outcomes (tiers: {', '.join(self.tiers)})",
                                path=self.path)
        if small and large:
            return small, large
        if len(self.tiers) != 2 and not (small or large):
            raise DataError(f"{len(self.tiers)} tiers in the outcomes; name the small and large ones",
                            path=self.path)
        if small:
            others = [t for t in self.tiers if t != small]
            return small, others[-1]
        if large:
            others = [t for t in self.tiers if t != large]
            return others[0], large
        a, b = self.tiers
        if self.has_costs():
            ca, cb = float(self.costs(a).mean()), float(self.costs(b).mean())
            if ca != cb:
                return (a, b) if ca < cb else (b, a)
        return (a, b) if self.scores(a).mean() <= self.scores(b).mean() else (b, a)


def _number(value: Any, what: str, path: str, line: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DataError(f"{what} must be a number, got {value!r}", path=path, line=line)
    try:
        x = float(value)
    except ValueError:
        raise DataError(f"{what} must be a number, got {value!r}", path=path, line=line) from None
    if not math.isfinite(x):
        raise DataError(f"{what} must be finite, got {value!r}", path=path, line=line)
    return x


def _row(obj: Any, path: str, line: int) -> Outcome:
    if not isinstance(obj, dict):
        raise DataError("each line must be a JSON object", path=path, line=line)
    unknown = sorted(set(obj) - {"prompt", "scores", "costs", "id", "meta"})
    if unknown:
        raise DataError(f"unknown key(s) {', '.join(unknown)} (want prompt, scores, costs)", path=path, line=line)
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError("'prompt' must be a non-empty string", path=path, line=line)
    scores = obj.get("scores")
    if not isinstance(scores, dict) or not scores:
        raise DataError("'scores' must be an object {tier: score}", path=path, line=line)
    parsed = {str(t): _number(v, f"scores.{t}", path, line) for t, v in scores.items()}
    costs = obj.get("costs")
    parsed_costs = None
    if costs is not None:
        if not isinstance(costs, dict):
            raise DataError("'costs' must be an object {tier: cost}", path=path, line=line)
        parsed_costs = {str(t): _number(v, f"costs.{t}", path, line) for t, v in costs.items()}
        negative = sorted(t for t, c in parsed_costs.items() if c < 0)
        if negative:
            raise DataError(f"costs.{negative[0]} must be 0 or more, got {parsed_costs[negative[0]]:g}",
                            path=path, line=line)
        extra = sorted(set(parsed_costs) - set(parsed))
        if extra:
            raise DataError(f"costs for tier(s) with no score: {', '.join(extra)}", path=path, line=line)
    return Outcome(prompt, parsed, parsed_costs, line)


def _finish(rows: list[Outcome], path: str) -> Outcomes:
    if not rows:
        raise DataError("no outcomes (empty file)", path=path)
    tiers = list(rows[0].scores)
    if len(tiers) < 2:
        raise DataError("outcomes need scores of at least two tiers", path=path, line=rows[0].line)
    for r in rows:
        if set(r.scores) != set(tiers):
            raise DataError(f"scores tiers {sorted(r.scores)} differ from the first row's {sorted(tiers)}",
                            path=path, line=r.line)
    return Outcomes(rows, tiers, path=path)


def read_outcomes_jsonl(path: str | os.PathLike[str]) -> Outcomes:
    p = str(path)
    return _finish([_row(obj, p, line_no) for line_no, obj in json_lines(p)], p)


def read_outcomes_csv(path: str | os.PathLike[str]) -> Outcomes:
    p = str(path)
    rows: list[Outcome] = []
    with reading(p), open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "prompt" not in columns:
            raise DataError(f"no 'prompt' column; columns are {', '.join(columns) or '(none)'}", path=p, line=1)
        score_cols = {c: c.removeprefix("score:") for c in columns if c != "prompt" and not c.startswith("cost:")}
        cost_cols = {c: c.removeprefix("cost:") for c in columns if c.startswith("cost:")}
        start = reader.line_num + 1
        for rec in reader:
            line, start = start, reader.line_num + 1
            if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                continue
            obj: dict[str, Any] = {"prompt": rec.get("prompt"), "scores": {}}
            for col, tier in score_cols.items():
                if rec.get(col) in (None, ""):
                    raise DataError(f"empty score column {col!r}", path=p, line=line)
                obj["scores"][tier] = rec[col]
            costs = {tier: rec[col] for col, tier in cost_cols.items() if rec.get(col) not in (None, "")}
            if costs:
                obj["costs"] = costs
            rows.append(_row(obj, p, line))
    return _finish(rows, p)


def read_outcomes(path: str | os.PathLike[str]) -> Outcomes:
    """Read an outcomes file by its suffix: .jsonl / .json (JSON lines) or .csv."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_outcomes_csv(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_outcomes_jsonl(path)
    raise DataError("unknown outcomes format (want .jsonl or .csv)", path=str(path))


def write_outcomes(outcomes: Outcomes, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".csv":
        cost_tiers = [t for t in outcomes.tiers if any(r.costs and t in r.costs for r in outcomes.rows)]
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["prompt", *outcomes.tiers, *(f"cost:{t}" for t in cost_tiers)])
            for r in outcomes.rows:
                costs = r.costs or {}
                w.writerow([r.prompt, *(r.scores[t] for t in outcomes.tiers),
                            *(costs.get(t, "") for t in cost_tiers)])
        return p
    with open(p, "w", encoding="utf-8") as f:
        for r in outcomes.rows:
            obj: dict[str, Any] = {"prompt": r.prompt, "scores": r.scores}
            if r.costs:
                obj["costs"] = r.costs
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return p


def fill_costs(outcomes: Outcomes, *, fixed: Mapping[str, float] | None = None,
               prices: Mapping[str, str] | None = None, completion_tokens: int = 1,
               pricebook: str | None = None) -> Outcomes:
    """Outcomes whose rows all have a cost for every tier: kept where given, else `fixed[tier]` USD per request,
    else the price-book price of `prices[tier]` (a model name) for the prompt's estimated tokens (chars / 4)
    plus `completion_tokens`."""
    fixed = dict(fixed or {})
    prices = dict(prices or {})
    for tier, usd in fixed.items():
        if not (math.isfinite(usd) and usd >= 0):
            raise DataError(f"--cost {tier}={usd:g}: a cost must be a number of USD, 0 or more")
    book = None
    if prices:
        from tiergate.costs.pricebook import load_pricebook

        book = load_pricebook(pricebook)
    model_prices = {}
    for tier, model in prices.items():
        assert book is not None
        mp = book.model(model, warn=False)
        if mp is None:
            raise DataError(f"tier {tier!r}: model {model!r} is not in the price book", path=outcomes.path)
        model_prices[tier] = mp
    rows = []
    for r in outcomes.rows:
        costs = dict(r.costs or {})
        for tier in outcomes.tiers:
            if tier in costs:
                continue
            if tier in fixed:
                costs[tier] = float(fixed[tier])
            elif tier in model_prices:
                costs[tier] = model_prices[tier].request_usd(max(1, math.ceil(len(r.prompt) / 4)), completion_tokens)
            else:
                raise DataError(f"no cost for tier {tier!r} in the file and none given (--cost {tier}=USD or "
                                f"--price {tier}=MODEL)", path=outcomes.path, line=r.line)
        rows.append(replace(r, costs=costs))
    return replace(outcomes, rows=rows)
