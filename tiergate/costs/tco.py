"""The total cost of ownership of each path of a scenario, month by month over the horizon.

    model = TcoModel(load_scenario("examples/tco/document-classification.yaml"), load_pricebook())
    report = model.report()      # JSON-ready dict: paths, savings_pct, break_even_monthly_volume, ...

Each month m (1..horizon) of each path costs:
- inference: volume_m x (prompt tokens x input price + completion tokens x output price + per-request price),
  the escalated share priced on the path it escalates to;
- infrastructure: instances_m x price per instance-month, instances fixed or sized to volume_m
  (peak rate / (measured throughput x target utilisation), at least min_instances, plus redundancy);
- evaluation and maintenance, prompt-maintenance labour, other fixed monthly costs;
- retraining in months 1 + k x every_months (k >= 1): its cost plus newly labelled examples;
and once, in month 1: fine-tuning, data preparation (examples x annotation price + fixed), other one-time.
volume_m = requests_per_month x (1 + growth)^(m - 1).

Definitions used in the report:
- `monthly_usd`: recurring cost (everything but one-time costs) averaged over the horizon;
- `break_even_monthly_volume`: the lowest first-month volume at which the candidate's horizon TCO is no higher
  than the baseline's, i.e. where the monthly costs are equal once one-time costs are amortised over the
  horizon (growth applied as in the scenario);
- `payback_months`: at the scenario's volume, when the candidate's cumulative cost (one-time costs paid up
  front) falls to the baseline's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from tiergate.costs.pricebook import PriceBook
from tiergate.costs.scenario import Pick, Scenario, has_range, pick
from tiergate.errors import ConfigError

COMPONENTS = {
    "inference": "inference (tokens x price)",
    "infrastructure": "infrastructure (instances)",
    "evaluation_maintenance": "evaluation & maintenance",
    "prompt_maintenance": "prompt maintenance labour",
    "fixed_monthly": "other monthly costs",
    "retraining": "retraining",
    "fine_tuning": "fine-tuning (one-time)",
    "data_preparation": "data preparation (one-time)",
    "other_one_time": "other one-time costs",
}
ONE_TIME = ("fine_tuning", "data_preparation", "other_one_time")

KNOB_LABELS = {
    "volume": "monthly volume",
    "input_tokens": "prompt tokens",
    "output_tokens": "completion tokens",
    "baseline_token_price": "baseline token prices",
    "infra_price": "infrastructure price",
    "one_time": "fine-tune, data, retrain",
    "labour": "evaluation & labour",
}


@dataclass(frozen=True)
class Knobs:
    """Multipliers on the scenario's inputs (sensitivity), and which end of each [low, high] range to use."""

    volume: float = 1.0
    input_tokens: float = 1.0
    output_tokens: float = 1.0
    baseline_token_price: float = 1.0
    infra_price: float = 1.0
    one_time: float = 1.0
    labour: float = 1.0
    pick: Pick = "mid"


@dataclass
class PathResult:
    name: str
    components: dict[str, float]
    monthly: list[float]
    """Recurring cost of each month."""
    instances: list[int]
    per_request_usd: float

    @property
    def one_time_usd(self) -> float:
        return sum(self.components[c] for c in ONE_TIME)

    @property
    def total_usd(self) -> float:
        return sum(self.components.values())

    @property
    def monthly_usd(self) -> float:
        return (self.total_usd - self.one_time_usd) / len(self.monthly)


@dataclass
class _Prices:
    """A path's prices once the price book is consulted."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    source: str = "none"
    instance_monthly_usd: float = 0.0
    instance_source: str = ""
    training_per_mtok: float = 0.0
    gpu_hourly_usd: float = 0.0
    notes: list[str] = field(default_factory=list)


class TcoModel:
    """The scenario's paths, priced; `run` evaluates them at any volume and set of knobs."""

    def __init__(self, scenario: Scenario, book: PriceBook) -> None:
        self.scenario = scenario
        self.book = book
        self.hours_per_month = book.data.hours_per_month
        self.prices = {name: self._resolve(name) for name in scenario.paths}

    def _resolve(self, name: str) -> _Prices:
        spec = self.scenario.paths[name]
        inf, out = spec.inference, _Prices()
        where = f"paths.{name}"
        entry = None
        if inf.model is not None:
            need_book = inf.input_per_mtok is None or inf.output_per_mtok is None
            entry = self.book.model(inf.model, warn=False)
            if entry is None and need_book:
                raise ConfigError(f"{where}.inference.model: {inf.model!r} is not in the price book ({self.book.source}, "
                                  f"as of {self.book.as_of}); set input_per_mtok and output_per_mtok, or add it to a price-book override")
        elif spec.kind in ("api", "managed_fine_tune") and (inf.input_per_mtok is None or inf.output_per_mtok is None) \
                and not inf.per_request_usd:
            raise ConfigError(f"{where}.inference: an {spec.kind} path needs model, or input_per_mtok and output_per_mtok")
        out.input_per_mtok = inf.input_per_mtok if inf.input_per_mtok is not None else (entry.input_per_mtok if entry else 0.0)
        out.output_per_mtok = inf.output_per_mtok if inf.output_per_mtok is not None else (entry.output_per_mtok if entry else 0.0)
        explicit = inf.input_per_mtok is not None and inf.output_per_mtok is not None
        out.source = "scenario" if explicit or entry is None else f"price book: {entry.name} (as of {self.book.as_of})"
        if entry is not None and entry.kind == "self_hosted":
            out.notes.append(f"{where}: book entry {entry.name!r} is self-hosted; model its instances under infrastructure")
        infra = spec.infrastructure
        if infra is not None:
            preset = self.book.instance(infra.instance, warn=False) if infra.instance else None
            if infra.instance and preset is None and infra.hourly_usd is None and infra.monthly_usd_per_instance is None:
                raise ConfigError(f"{where}.infrastructure.instance: unknown instance {infra.instance!r} "
                                  f"(known: {', '.join(self.book.instance_names())}); or set hourly_usd")
            if infra.monthly_usd_per_instance is not None:
                out.instance_monthly_usd, out.instance_source = infra.monthly_usd_per_instance, "scenario"
            elif infra.hourly_usd is not None:
                out.instance_monthly_usd = infra.hourly_usd * self.hours_per_month
                out.instance_source = "scenario"
            else:
                assert preset is not None
                out.instance_monthly_usd = preset.monthly_usd
                out.instance_source = f"price book: {preset.name} at ${preset.hourly_usd}/h (as of {self.book.as_of})"
        ft = spec.fine_tuning
        if ft is not None:
            if ft.gpu_hours:
                if ft.gpu_hourly_usd is not None:
                    out.gpu_hourly_usd = ft.gpu_hourly_usd
                else:
                    gpu = self.book.instance(ft.gpu_instance or "", warn=False)
                    if gpu is None:
                        raise ConfigError(f"{where}.fine_tuning.gpu_instance: unknown instance {ft.gpu_instance!r}")
                    out.gpu_hourly_usd = gpu.hourly_usd
            if ft.training_tokens:
                price = ft.training_per_mtok if ft.training_per_mtok is not None else (entry.training_per_mtok if entry else None)
                if price is None:
                    raise ConfigError(f"{where}.fine_tuning.training_per_mtok: needed for training_tokens "
                                      "(the inference model has no training price in the book)")
                out.training_per_mtok = price
        return out

    # --- the model ------------------------------------------------------------------------------------
    def _tokens(self, name: str, k: Knobs) -> tuple[float, float]:
        inf, t = self.scenario.paths[name].inference, self.scenario.tokens
        tin = inf.input_tokens_per_request if inf.input_tokens_per_request is not None else t.input_per_request
        tout = inf.output_tokens_per_request if inf.output_tokens_per_request is not None else t.output_per_request
        return tin * k.input_tokens, tout * k.output_tokens

    def per_request_usd(self, name: str, k: Knobs = Knobs()) -> float:
        """Direct inference cost of one request answered on this path."""
        p, tin_tout = self.prices[name], self._tokens(name, k)
        scale = k.baseline_token_price if name == self.scenario.baseline else 1.0
        tokens = (tin_tout[0] * p.input_per_mtok + tin_tout[1] * p.output_per_mtok) / 1e6
        return (tokens + self.scenario.paths[name].inference.per_request_usd) * scale

    def _instances(self, name: str, served: float) -> int:
        infra = self.scenario.paths[name].infrastructure
        assert infra is not None
        if infra.instances is not None:
            return infra.instances
        assert infra.throughput_rps_per_instance is not None
        peak_rps = served / (self.hours_per_month * 3600.0) * self.scenario.volume.peak_to_average
        needed = math.ceil(peak_rps / (infra.throughput_rps_per_instance * infra.target_utilisation) - 1e-9)
        return max(infra.min_instances, needed) + infra.redundancy

    def run_path(self, name: str, volume: float, k: Knobs = Knobs()) -> PathResult:
        spec, prices, sc = self.scenario.paths[name], self.prices[name], self.scenario
        w = k.pick
        esc = spec.inference.escalation_share
        own = self.per_request_usd(name, k)
        other = self.per_request_usd(spec.inference.escalate_to, k) if spec.inference.escalate_to else 0.0
        growth = 1.0 + sc.volume.growth_pct_per_month / 100.0
        labour = (pick(spec.evaluation_maintenance_monthly_usd, w) * k.labour,
                  spec.prompt_maintenance.hours_per_month * spec.prompt_maintenance.hourly_rate_usd * k.labour)
        fixed = sum(pick(v, w) for v in spec.fixed_monthly_usd.values())
        ft_cost = self._fine_tune_usd(name, w) * k.one_time
        dp = spec.data_preparation
        per_example = pick(dp.price_per_example_usd, w) if dp is not None else 0.0
        rt = spec.retraining
        retrain_cost = 0.0
        if rt is not None:
            base = pick(rt.cost_usd, w) * k.one_time if rt.cost_usd is not None else ft_cost
            retrain_cost = base + rt.new_examples * per_example * k.one_time
        comp = dict.fromkeys(COMPONENTS, 0.0)
        monthly: list[float] = []
        instances: list[int] = []
        for m in range(1, sc.horizon_months + 1):
            v = volume * growth ** (m - 1)
            served = v * (1.0 - esc)
            cost = {"inference": served * own + v * esc * other}
            if spec.infrastructure is not None:
                n = self._instances(name, served)
                instances.append(n)
                cost["infrastructure"] = n * prices.instance_monthly_usd * k.infra_price
            cost["evaluation_maintenance"], cost["prompt_maintenance"] = labour
            cost["fixed_monthly"] = fixed
            if rt is not None and m > 1 and (m - 1) % rt.every_months == 0:
                cost["retraining"] = retrain_cost
            for key, value in cost.items():
                comp[key] += value
            monthly.append(sum(cost.values()))
        comp["fine_tuning"] = ft_cost
        if dp is not None:
            comp["data_preparation"] = (dp.labelled_examples * per_example + pick(dp.fixed_usd, w)) * k.one_time
        comp["other_one_time"] = sum(pick(v, w) for v in spec.one_time_usd.values()) * k.one_time
        return PathResult(name=name, components=comp, monthly=monthly, instances=instances, per_request_usd=own)

    def _fine_tune_usd(self, name: str, w: Pick) -> float:
        ft, p = self.scenario.paths[name].fine_tuning, self.prices[name]
        if ft is None:
            return 0.0
        return (pick(ft.one_time_usd, w) + ft.gpu_hours * p.gpu_hourly_usd
                + ft.training_tokens * ft.epochs * p.training_per_mtok / 1e6)

    def run(self, volume: float | None = None, k: Knobs = Knobs()) -> dict[str, PathResult]:
        """Every path at `volume` requests in the first month (default: the scenario's) times k.volume."""
        v = (self.scenario.volume.requests_per_month if volume is None else volume) * k.volume
        return {name: self.run_path(name, v, k) for name in self.scenario.paths}

    def savings_pct(self, results: dict[str, PathResult], candidate: str | None = None) -> float | None:
        """Savings as a share of the baseline's total; None (undefined, not 0%) when the baseline costs nothing."""
        base = results[self.scenario.baseline or ""].total_usd
        cand = results[candidate or self.scenario.candidate or ""].total_usd
        return (base - cand) / base * 100.0 if base > 0 else None

    def _gap(self, volume: float, k: Knobs) -> float:
        """Candidate TCO minus baseline TCO at a first-month volume (volume knob not applied)."""
        sc = self.scenario
        k = replace(k, volume=1.0)
        return (self.run_path(sc.candidate or "", volume, k).total_usd
                - self.run_path(sc.baseline or "", volume, k).total_usd)

    def break_even_volume(self, k: Knobs = Knobs(), *, max_volume: float = 1e13) -> float | None:
        """Lowest first-month volume where the candidate's TCO is no higher than the baseline's; None if never.

        Scans volumes on a log grid (costs may step as instances are added), then bisects the first crossing."""
        at_zero = self._gap(0.0, k)
        if at_zero < 0 or (at_zero == 0 and self._gap(1.0, k) <= 0):
            return 0.0  # the candidate is no dearer from the first request
        lo, steps = 1.0, 20  # grid points per decade
        decades = math.log10(max_volume)
        prev = 0.0
        for i in range(int(decades * steps) + 1):
            v = lo * 10 ** (i / steps)
            if self._gap(v, k) <= 0:
                a, b = prev, v
                for _ in range(200):
                    mid = (a + b) / 2.0
                    if self._gap(mid, k) <= 0:
                        b = mid
                    else:
                        a = mid
                    if b - a <= max(1e-9 * b, 1e-9):
                        break
                return b
            prev = v
        return None

    def payback_months(self, results: dict[str, PathResult]) -> float | None:
        """Months until the candidate's cumulative cost (one-time up front) falls to the baseline's for good: the
        last crossing, interpolated within its month. 0 when it is never dearer; None when it is still dearer at
        the end of the horizon (a candidate with no one-time costs that costs more each month never pays back)."""
        base, cand = results[self.scenario.baseline or ""], results[self.scenario.candidate or ""]
        gap = [cand.one_time_usd - base.one_time_usd]  # candidate's cumulative cost minus the baseline's
        for b, c in zip(base.monthly, cand.monthly, strict=True):
            gap.append(gap[-1] + c - b)
        if gap[-1] > 0:
            return None
        dearer = [m for m, g in enumerate(gap) if g > 0]
        if not dearer:
            return 0.0
        m = dearer[-1]  # dearer at the start of month m+1, no dearer from its end on
        return m + gap[m] / (gap[m] - gap[m + 1])

    def sensitivity(self) -> list[dict[str, Any]]:
        rows = []
        for knob, label in KNOB_LABELS.items():
            for change in self.scenario.sensitivity.changes_pct:
                k = Knobs(**{knob: 1.0 + change / 100.0})
                res = self.run(k=k)
                rows.append({
                    "input": knob, "label": label, "change_pct": change,
                    "baseline_total_usd": res[self.scenario.baseline or ""].total_usd,
                    "candidate_total_usd": res[self.scenario.candidate or ""].total_usd,
                    "savings_pct": self.savings_pct(res),
                    "break_even_monthly_volume": self.break_even_volume(k),
                })
        return rows

    def curve(self, break_even: float | None) -> dict[str, Any]:
        cs, v0 = self.scenario.curve, self.scenario.volume.requests_per_month
        lo = cs.min_volume or min(v0 / 100.0, break_even / 3.0 if break_even else v0)
        hi = cs.max_volume or max(v0 * 10.0, break_even * 3.0 if break_even else v0)
        volumes = [lo * (hi / lo) ** (i / (cs.points - 1)) for i in range(cs.points)]
        totals: dict[str, list[float]] = {name: [] for name in self.scenario.paths}
        for v in volumes:
            for name, r in self.run(volume=v).items():
                totals[name].append(r.total_usd)
        return {"volumes": volumes, "total_usd": totals}

    def report(self) -> dict[str, Any]:
        from tiergate.costs.tco_report import build_report

        return build_report(self)


def ranged(scenario: Scenario) -> bool:
    """Whether any money field of the scenario is a [low, high] range."""
    for p in scenario.paths.values():
        amounts: list[Any] = [p.evaluation_maintenance_monthly_usd, *p.fixed_monthly_usd.values(), *p.one_time_usd.values()]
        if p.fine_tuning:
            amounts.append(p.fine_tuning.one_time_usd)
        if p.data_preparation:
            amounts += [p.data_preparation.price_per_example_usd, p.data_preparation.fixed_usd]
        if p.retraining:
            amounts.append(p.retraining.cost_usd)
        if any(has_range(a) for a in amounts):
            return True
    return False
