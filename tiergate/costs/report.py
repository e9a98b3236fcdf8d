"""Spend from captured records, and what the same traffic would have cost all on one tier.

    summary = counterfactual(records, {"frontier": frontier_pricer, "small": small_pricer})
    summary["by_workload"]["support-triage"]["cost_usd"]
    summary["counterfactual"]["frontier"]["savings_usd"]    # all-on-frontier cost minus the actual cost

`records` is any iterable of mappings with keys workload, tier, day (a date or "YYYY-MM-DD"),
prompt_tokens, completion_tokens and cost_usd (None when the tier's price was unknown), and optionally role and
request_id.
A `cascade_first` record (a cascade's first, escalated attempt) adds its tokens and cost to the spend but is
not a request of its own: it is counted under `cascade_first`, and the counterfactual prices each request once,
by its final (primary) record. Shadow records belong in a separate call (shadow spend). Pure: the store
supplies the rows (`spend_report` below queries it), this only adds them up.

Records without a known cost are counted (`unpriced_requests`) but add nothing to `cost_usd` (None, unknown, for a
bucket whose records are all unpriced); savings against a counterfactual compare like with like: the actual cost of the priced records against what those same records
would have cost on the tier. A tier whose pricer is unknown gets no counterfactual cost (None), not zero.

The token counts a request would have had on another tier come from `basis` (`tiergate.costs.token_basis`): the
measured counts of a shadow or cascade pair on that tier, else the workload's measured ratio between the two
tiers, else the answering tier's own counts (an estimate). Each counterfactual says which (`basis`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tiergate.costs.pricing import Pricer
from tiergate.costs.token_basis import BASES, Basis, TokenBasis, basis_label
from tiergate.errors import DataError

_KEYS = ("workload", "tier", "day", "prompt_tokens", "completion_tokens", "cost_usd")


@dataclass
class _Sum:
    requests: int = 0
    cascade_first: int = 0
    unpriced_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, prompt: int, completion: int, cost: float | None, first_attempt: bool = False) -> None:
        if first_attempt:
            self.cascade_first += 1
        else:
            self.requests += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if cost is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += cost

    @property
    def known_cost(self) -> float | None:
        """The cost of the priced records; None (unknown, not $0) when every record is unpriced."""
        all_unpriced = self.unpriced_requests and self.unpriced_requests == self.requests + self.cascade_first
        return None if all_unpriced else self.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cascade_first": self.cascade_first,
                "unpriced_requests": self.unpriced_requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.known_cost}


@dataclass(slots=True)
class _Counterfactual:
    cost_usd: float = 0.0
    """All records on the tier."""
    comparable_usd: float = 0.0
    """Only the records whose actual cost is known."""
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    """The requests' tokens on the tier (measured, scaled by a ratio, or the same: see `counts`)."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BASES, 0))
    """Requests by token basis (answered, measured, ratio, same_tokens)."""
    ratios: set[tuple[str, str]] = field(default_factory=set)
    """(workload, answering tier) of every ratio applied."""

    def add(self, would: float, priced: bool, prompt: float, completion: float, how: Basis,
            ratio_key: tuple[str, str] | None) -> None:
        self.cost_usd += would
        if priced:
            self.comparable_usd += would
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.counts[how] += 1
        if ratio_key is not None:
            self.ratios.add(ratio_key)

    def basis(self, tier: str, tokens: TokenBasis) -> dict[str, Any]:
        used = sorted(self.ratios)
        out: dict[str, Any] = {
            **self.counts,
            "ratio_pairs": sum(r.pairs for w, src in used if (r := tokens.ratio(w, src, tier)) is not None),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "ratios": {f"{w}:{src}": r.as_dict() for w, src in used if (r := tokens.ratio(w, src, tier)) is not None},
        }
        out["label"] = basis_label(out)
        return out


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _counterfactual_dict(cf: _Counterfactual, spent: _Sum, pricer: Pricer, tier: str,
                         tokens: TokenBasis) -> dict[str, Any]:
    basis = cf.basis(tier, tokens)
    if pricer.unknown:
        return {"cost_usd": None, "comparable_usd": None, "savings_usd": None, "savings_pct": None,
                "unknown_price": True, "basis": basis}
    actual = spent.known_cost
    if actual is None:  # no priced record to compare with: the saving is unknown, not $0
        return {"cost_usd": cf.cost_usd, "comparable_usd": None, "savings_usd": None, "savings_pct": None,
                "unknown_price": False, "basis": basis}
    saved = cf.comparable_usd - actual
    return {"cost_usd": cf.cost_usd, "comparable_usd": cf.comparable_usd, "savings_usd": saved,
            "savings_pct": saved / cf.comparable_usd * 100.0 if cf.comparable_usd > 0 else None,
            "unknown_price": False, "basis": basis}


def counterfactual(records: Iterable[Mapping[str, Any]], tiers_pricers: Mapping[str, Pricer],
                   basis: TokenBasis | None = None) -> dict[str, Any]:
    """Spend by workload, tier, day and workload x tier; and, per tier of `tiers_pricers`, the cost had every
    request gone to that tier, with the savings of the actual routing against it (overall and per workload).
    `basis` holds measured token counts and ratios from shadow and cascade pairs (none: every request keeps its
    own counts on every tier, an estimate)."""
    tokens = basis if basis is not None else TokenBasis.empty()
    total = _Sum()
    by_workload: dict[str, _Sum] = {}
    by_tier: dict[str, _Sum] = {}
    by_day: dict[str, _Sum] = {}
    by_wt: dict[str, dict[str, _Sum]] = {}
    by_dt: dict[str, dict[str, _Sum]] = {}
    cf_all = {t: _Counterfactual() for t in tiers_pricers}
    cf_wl: dict[str, dict[str, _Counterfactual]] = {}
    cf_day: dict[str, dict[str, _Counterfactual]] = {}
    for i, rec in enumerate(records):
        try:
            workload, tier, day = str(rec["workload"]), str(rec["tier"]), _day(rec["day"])
            prompt, completion = int(rec["prompt_tokens"] or 0), int(rec["completion_tokens"] or 0)
            cost = None if rec["cost_usd"] is None else float(rec["cost_usd"])
            first = rec.get("role") == "cascade_first"
            rid = rec.get("request_id")
        except KeyError as exc:
            raise DataError(f"record {i}: missing key {exc.args[0]!r} (records need {', '.join(_KEYS)})") from exc
        except (TypeError, ValueError) as exc:
            raise DataError(f"record {i}: {exc}") from exc
        for acc in (total, by_workload.setdefault(workload, _Sum()), by_tier.setdefault(tier, _Sum()),
                    by_day.setdefault(day, _Sum()), by_wt.setdefault(workload, {}).setdefault(tier, _Sum()),
                    by_dt.setdefault(day, {}).setdefault(tier, _Sum())):
            acc.add(prompt, completion, cost, first)
        wl_cf = cf_wl.setdefault(workload, {t: _Counterfactual() for t in tiers_pricers})
        day_cf = cf_day.setdefault(day, {t: _Counterfactual() for t in tiers_pricers})
        if first:
            continue  # the request is priced once, by its final record
        for t, pricer in tiers_pricers.items():
            p_t, c_t, how = tokens.tokens(None if rid is None else str(rid), workload, tier, prompt, completion, t)
            would = pricer.cost(p_t, c_t)  # a ratio gives fractional tokens
            key = (workload, tier) if how == "ratio" else None
            for cf in (cf_all[t], wl_cf[t], day_cf[t]):
                cf.add(would, cost is not None, p_t, c_t, how, key)
    return {
        **total.as_dict(),
        "by_workload": {w: s.as_dict() for w, s in sorted(by_workload.items())},
        "by_tier": {t: s.as_dict() for t, s in sorted(by_tier.items())},
        "by_day": {d: s.as_dict() for d, s in sorted(by_day.items())},
        "by_workload_tier": {w: {t: s.as_dict() for t, s in sorted(ts.items())} for w, ts in sorted(by_wt.items())},
        "by_day_tier": {d: {t: s.as_dict() for t, s in sorted(ts.items())} for d, ts in sorted(by_dt.items())},
        "counterfactual": {t: _counterfactual_dict(cf_all[t], total, p, t, tokens) for t, p in tiers_pricers.items()},
        "by_workload_counterfactual": {
            w: {t: _counterfactual_dict(cfs[t], by_workload[w], tiers_pricers[t], t, tokens) for t in tiers_pricers}
            for w, cfs in sorted(cf_wl.items())
        },
        "by_day_counterfactual": {
            d: {t: _counterfactual_dict(cfs[t], by_day[d], tiers_pricers[t], t, tokens) for t in tiers_pricers}
            for d, cfs in sorted(cf_day.items())
        },
    }


# -- from the store ---------------------------------------------------------------------------------------------
# spend_report(engine, config, since=..., workload=..., baseline=...) queries the records table (streaming, only
# the columns it needs), prices the same traffic on every configured tier and picks the all-frontier baseline.

SECONDS_PER_DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": SECONDS_PER_DAY, "w": 7 * SECONDS_PER_DAY}


def parse_since(value: str | None, now: float | None = None, *, option: str = "--since") -> float | None:
    """Unix seconds from a duration back from now ("30m", "12h", "7d", "2w") or an ISO date/time (UTC unless it
    names its offset, as the reports' days are UTC days); None (no bound) for "all", nothing, or a start before
    1970 (everything captured). DataError for text that is neither, and for a start in the future (it would
    match nothing and report an empty window as if no traffic had been captured), naming the input as `option`."""
    if not value or value == "all":
        return None
    import math
    import time

    current = time.time() if now is None else now
    text = value.strip()
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        back = float(text[:-1]) * _UNITS[text[-1]]
        when = current - back if math.isfinite(back) else -math.inf
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise DataError(f"{option} {value!r}: use a duration like 30m, 12h, 7d, 2w, an ISO date or all") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            when = parsed.timestamp()
        except (OverflowError, OSError, ValueError):
            when = -math.inf
    if when < 0:
        return None
    if when > current:
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")

        raise DataError(f"{option} {value!r}: {iso(when)} is in the future (now {iso(current)}); nothing was "
                        "captured after it")
    return when


def tier_pricers(config: Any, book: Any = None) -> dict[str, Pricer]:
    """The pricer of every configured tier, as the gateway prices its records (an upstream tier by its model)."""
    from tiergate.costs.pricebook import load_pricebook
    from tiergate.costs.pricing import build_pricer

    book = book if book is not None else load_pricebook(config.pricebook)
    return {name: build_pricer(tier.price, book, model=getattr(tier, "model", None) if tier.kind == "upstream" else None,
                               warn=False)
            for name, tier in config.tiers.items()}


MIN_PROJECTION_DAYS = 1 / 24
"""The shortest observed window a monthly projection is made from: one hour of traffic."""


@dataclass(frozen=True)
class Window:
    """The observed traffic window. `days` estimates the span the requests stand for: n arrivals between the
    first and the last one cover (last - first) x n / (n - 1); unknown (None) below two distinct timestamps."""

    first: float | None
    last: float | None
    requests: int

    @property
    def days(self) -> float | None:
        if self.first is None or self.last is None or self.requests < 2 or self.last <= self.first:
            return None
        return (self.last - self.first) * self.requests / (self.requests - 1) / SECONDS_PER_DAY

    @property
    def monthly_factor(self) -> float | None:
        """Requests in a month over requests in the window; None below MIN_PROJECTION_DAYS of traffic, where a
        month extrapolated from a burst (a load test, a demo) would be nonsense."""
        from tiergate.costs.profile import DAYS_PER_MONTH

        return None if self.days is None or self.days < MIN_PROJECTION_DAYS else DAYS_PER_MONTH / self.days

    def as_dict(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")

        return {"first": iso(self.first), "last": iso(self.last), "requests": self.requests, "days": self.days,
                "monthly_factor": self.monthly_factor}


def _where(q: Any, since: float | None, until: float | None, workload: str | None) -> Any:
    from tiergate.store.records import in_window

    return in_window(q, since=since, until=until, workload=workload)


def _day_utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).date().isoformat()


def spend_rows(engine: Any, *, shadow: bool, since: float | None = None, until: float | None = None,
               workload: str | None = None) -> Iterator[dict[str, Any]]:
    """Records that cost something, in counterfactual() shape: primary and cascade_first ones, or the shadows.
    Answered records, and failed ones that carry a cost (a stream that broke off after the tier had generated:
    the tokens are billed all the same)."""
    from sqlalchemy import or_, select

    from tiergate.store.schema import records as r

    q = select(r.c.request_id, r.c.created_at, r.c.workload, r.c.tier, r.c.role, r.c.prompt_tokens,
               r.c.completion_tokens, r.c.cost_usd).where(or_(r.c.status == "ok", r.c.cost_usd.is_not(None)))
    q = q.where(r.c.role == "shadow") if shadow else q.where(r.c.role != "shadow")
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=5000).execute(_where(q, since, until, workload).order_by(r.c.id)):
            yield {"request_id": row.request_id, "workload": row.workload, "tier": row.tier or "-",
                   "day": _day_utc(row.created_at), "role": row.role, "prompt_tokens": row.prompt_tokens,
                   "completion_tokens": row.completion_tokens, "cost_usd": row.cost_usd}


def check_workload(engine: Any, config: Any, workload: str) -> None:
    """Refuse a workload name that is neither configured nor in any captured record (a typo would otherwise
    report an empty window); DataError naming it and the workloads there are."""
    from sqlalchemy import select

    from tiergate.store.schema import records as r

    if workload in config.workloads or workload == config.routing.default_workload:
        return
    with engine.connect() as conn:
        if conn.execute(select(r.c.id).where(r.c.workload == workload).limit(1)).first() is not None:
            return
        seen = sorted({str(w) for (w,) in conn.execute(select(r.c.workload).distinct()) if w is not None}
                      | set(config.workloads))
    raise DataError(f"--workload {workload!r}: no such workload: not configured and never captured "
                    f"(workloads: {', '.join(seen) or 'none yet'})")


def traffic_window(engine: Any, *, since: float | None = None, until: float | None = None,
                   workload: str | None = None) -> Window:
    """First and last arrival and the count of primary requests (answered or not) in the filter."""
    from sqlalchemy import func, select

    from tiergate.store.schema import records as r

    q = select(func.min(r.c.created_at), func.max(r.c.created_at), func.count()).where(r.c.role == "primary")
    with engine.connect() as conn:
        first, last, n = conn.execute(_where(q, since, until, workload)).one()
    return Window(first, last, int(n))


def _errors(engine: Any, since: float | None, until: float | None, workload: str | None) -> dict[str, int]:
    from sqlalchemy import func, select

    from tiergate.store.schema import records as r

    q = select(r.c.workload, func.count()).where(r.c.status != "ok", r.c.role == "primary")
    with engine.connect() as conn:
        rows = conn.execute(_where(q, since, until, workload).group_by(r.c.workload)).all()
    return {str(w): int(n) for w, n in sorted(rows)}


def choose_baseline(config: Any, pricers: Mapping[str, Pricer], spend: Mapping[str, Any],
                    requested: str | None = None) -> tuple[str | None, str]:
    """The tier savings are measured against, and why: `requested`, else the external tier whose all-traffic
    counterfactual costs the most, else the most expensive priced tier; None when no tier has a price."""
    from tiergate.errors import ConfigError

    if requested is not None:
        if requested not in pricers:
            raise ConfigError(f"--baseline {requested!r}: not a configured tier ({', '.join(pricers)})")
        return requested, "chosen with --baseline"
    cf = spend["counterfactual"]
    priced = [t for t in pricers if not pricers[t].unknown]
    external = [t for t in priced if config.tiers[t].zone == "external"]
    pool, why = (external, "the most expensive external tier on this traffic") if external else (
        priced, "the most expensive priced tier on this traffic (no external tier has a price)")
    if not pool:
        return None, "no configured tier has a known price"
    return max(pool, key=lambda t: cf[t]["cost_usd"]), why


def _times(usd: float | None, factor: float) -> float | None:
    return None if usd is None else usd * factor


def _strip_counterfactual(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if "counterfactual" not in k}


def spend_report(engine: Any, config: Any, *, since: float | None = None, until: float | None = None,
                 workload: str | None = None, baseline: str | None = None, book: Any = None) -> dict[str, Any]:
    """Spend by workload, tier and day; shadow spend apart; every configured tier's all-traffic counterfactual;
    savings against the baseline; monthly figures extrapolated from the observed window. JSON-ready."""
    if workload is not None:
        check_workload(engine, config, workload)
    from tiergate.costs.token_basis import load_pairs

    pricers = tier_pricers(config, book)
    basis = TokenBasis.from_pairs(load_pairs(engine, since=since, until=until, workload=workload))
    spend = counterfactual(spend_rows(engine, shadow=False, since=since, until=until, workload=workload), pricers,
                           basis)
    shadow = _strip_counterfactual(counterfactual(
        spend_rows(engine, shadow=True, since=since, until=until, workload=workload), {}))
    window = traffic_window(engine, since=since, until=until, workload=workload)
    base, why = choose_baseline(config, pricers, spend, baseline)
    factor = window.monthly_factor
    errors = _errors(engine, since, until, workload)
    out: dict[str, Any] = {
        "filters": {"since": None if since is None else datetime.fromtimestamp(since, tz=UTC).isoformat(timespec="seconds"),
                    "until": None if until is None else datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds"),
                    "workload": workload},
        "window": window.as_dict(),
        "tiers": {name: {"kind": config.tiers[name].kind, "zone": config.tiers[name].zone, "price_source": p.source,
                         "unknown_price": p.unknown, "input_per_mtok": p.input_per_mtok,
                         "output_per_mtok": p.output_per_mtok, "per_request_usd": p.per_request_usd}
                  for name, p in pricers.items()},
        "spend": spend,
        "shadow": shadow,
        "errors": {"requests": sum(errors.values()), "by_workload": errors},
        "unpriced": {
            "requests": spend["unpriced_requests"], "shadow_requests": shadow["unpriced_requests"],
            "tiers": sorted({t for t, s in spend["by_tier"].items() if s["unpriced_requests"]}
                            | {t for t, s in shadow["by_tier"].items() if s["unpriced_requests"]}),
        },
        "baseline": None,
    }
    if base is not None:
        cf = spend["counterfactual"][base]
        out["baseline"] = {
            "tier": base, "why": why, "actual_usd": spend["cost_usd"], "cost_usd": cf["cost_usd"],
            "comparable_usd": cf["comparable_usd"],
            "savings_usd": cf["savings_usd"], "savings_pct": cf["savings_pct"], "basis": cf["basis"],
            "by_workload": {w: {"actual_usd": spend["by_workload"][w]["cost_usd"], **cfs[base]}
                            for w, cfs in spend["by_workload_counterfactual"].items()},
        }
    if factor is not None:
        month = {"cost_usd": _times(spend["cost_usd"], factor), "shadow_cost_usd": _times(shadow["cost_usd"], factor),
                 "requests": window.requests * factor}
        if base is not None and out["baseline"]["cost_usd"] is not None:
            month["baseline_cost_usd"] = out["baseline"]["cost_usd"] * factor
            if out["baseline"]["savings_usd"] is not None:
                month["baseline_comparable_usd"] = out["baseline"]["comparable_usd"] * factor
                month["savings_usd"] = out["baseline"]["savings_usd"] * factor
        out["monthly"] = month
    else:
        out["monthly"] = None
    return out
