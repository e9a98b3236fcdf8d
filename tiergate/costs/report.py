"""Spend from captured records, and what the same traffic would have cost all on one tier.

    summary = counterfactual(records, {"frontier": frontier_pricer, "small": small_pricer})
    summary["by_workload"]["support-triage"]["cost_usd"]
    summary["counterfactual"]["frontier"]["savings_usd"]    # all-on-frontier cost minus the actual cost

`records` is any iterable of mappings with keys workload, tier, day (a date or "YYYY-MM-DD"),
prompt_tokens, completion_tokens and cost_usd (None when the tier's price was unknown). Pure: the store
supplies the rows, this only adds them up.

Records without a known cost are counted (`unpriced_requests`) but add nothing to `cost_usd`; savings against a
counterfactual compare like with like: the actual cost of the priced records against what those same records
would have cost on the tier. A tier whose pricer is unknown gets no counterfactual cost (None), not zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tiergate.costs.pricing import Pricer
from tiergate.errors import DataError

_KEYS = ("workload", "tier", "day", "prompt_tokens", "completion_tokens", "cost_usd")


@dataclass
class _Sum:
    requests: int = 0
    unpriced_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, prompt: int, completion: int, cost: float | None) -> None:
        self.requests += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if cost is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += cost

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "unpriced_requests": self.unpriced_requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd}


@dataclass
class _Counterfactual:
    cost_usd: float = 0.0
    """All records on the tier."""
    comparable_usd: float = 0.0
    """Only the records whose actual cost is known."""


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _counterfactual_dict(cf: _Counterfactual, actual: float, pricer: Pricer) -> dict[str, Any]:
    if pricer.unknown:
        return {"cost_usd": None, "savings_usd": None, "savings_pct": None, "unknown_price": True}
    saved = cf.comparable_usd - actual
    return {"cost_usd": cf.cost_usd, "savings_usd": saved,
            "savings_pct": saved / cf.comparable_usd * 100.0 if cf.comparable_usd > 0 else None,
            "unknown_price": False}


def counterfactual(records: Iterable[Mapping[str, Any]], tiers_pricers: Mapping[str, Pricer]) -> dict[str, Any]:
    """Spend by workload, tier, day and workload x tier; and, per tier of `tiers_pricers`, the cost had every
    request gone to that tier, with the savings of the actual routing against it (overall and per workload)."""
    total = _Sum()
    by_workload: dict[str, _Sum] = {}
    by_tier: dict[str, _Sum] = {}
    by_day: dict[str, _Sum] = {}
    by_wt: dict[str, dict[str, _Sum]] = {}
    cf_all = {t: _Counterfactual() for t in tiers_pricers}
    cf_wl: dict[str, dict[str, _Counterfactual]] = {}
    for i, rec in enumerate(records):
        try:
            workload, tier, day = str(rec["workload"]), str(rec["tier"]), _day(rec["day"])
            prompt, completion = int(rec["prompt_tokens"] or 0), int(rec["completion_tokens"] or 0)
            cost = None if rec["cost_usd"] is None else float(rec["cost_usd"])
        except KeyError as exc:
            raise DataError(f"record {i}: missing key {exc.args[0]!r} (records need {', '.join(_KEYS)})") from exc
        except (TypeError, ValueError) as exc:
            raise DataError(f"record {i}: {exc}") from exc
        for acc in (total, by_workload.setdefault(workload, _Sum()), by_tier.setdefault(tier, _Sum()),
                    by_day.setdefault(day, _Sum()), by_wt.setdefault(workload, {}).setdefault(tier, _Sum())):
            acc.add(prompt, completion, cost)
        wl_cf = cf_wl.setdefault(workload, {t: _Counterfactual() for t in tiers_pricers})
        for t, pricer in tiers_pricers.items():
            would = pricer.cost(prompt, completion)
            for cf in (cf_all[t], wl_cf[t]):
                cf.cost_usd += would
                if cost is not None:
                    cf.comparable_usd += would
    return {
        **total.as_dict(),
        "by_workload": {w: s.as_dict() for w, s in sorted(by_workload.items())},
        "by_tier": {t: s.as_dict() for t, s in sorted(by_tier.items())},
        "by_day": {d: s.as_dict() for d, s in sorted(by_day.items())},
        "by_workload_tier": {w: {t: s.as_dict() for t, s in sorted(ts.items())} for w, ts in sorted(by_wt.items())},
        "counterfactual": {t: _counterfactual_dict(cf_all[t], total.cost_usd, p) for t, p in tiers_pricers.items()},
        "by_workload_counterfactual": {
            w: {t: _counterfactual_dict(cfs[t], by_workload[w].cost_usd, tiers_pricers[t]) for t in tiers_pricers}
            for w, cfs in sorted(cf_wl.items())
        },
    }
