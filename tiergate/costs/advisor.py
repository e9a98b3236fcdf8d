"""The decision framework as code: should this workload leave the frontier API, and for what?

    advice = advise(load_profile("examples/advise/support-triage.yaml"), load_pricebook())
    advice.recommendation      # "fine-tune a small model"
    advice.to_dict()           # flow steps with reasons, eight dimensions, payback, rule-of-thumb checks

The decision flow (each question's answer and why is kept in `steps`):

    Q1 volume over 500K/month?            no  -> Q6
    Q2 training data at hand?             yes -> Q4
    Q3 data creatable within budget?      no  -> Q6
    Q4 ML capacity in house?              (remembered)
    Q5 complex reasoning (or a measured quality gap over the limit)?   yes -> Q6
       no, with ML capacity     -> fine-tune a small model
       no, without ML capacity  -> Q6
    Q6 privacy constraints (data may not leave)?
       yes -> self-hosted open-weight model
       no  -> managed fine-tuning when reached from Q5 without ML capacity, else frontier API with cost monitoring

Latency, task stability and the quality gap, when not decisive, become reasons and costs (stability sets
the retraining cadence in the payback estimate).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tiergate.costs.pricebook import PriceBook
from tiergate.costs.profile import DAYS_PER_MONTH, RETRAIN_EVERY_MONTHS, Profile

if TYPE_CHECKING:
    from rich.console import Console

FINE_TUNE = "fine-tune a small model"
OPEN_WEIGHT = "self-hosted open-weight model"
MANAGED = "managed fine-tuning"
FRONTIER = "frontier API with cost monitoring"
OUTCOMES = (FINE_TUNE, OPEN_WEIGHT, MANAGED, FRONTIER)


@dataclass
class Step:
    question: str
    answer: bool
    reason: str


@dataclass
class Dimension:
    name: str
    value: str
    favours: str  # "small model", "frontier", "self-hosted" or "neutral"
    note: str


@dataclass
class Check:
    rule: str
    value: float | None
    threshold: float
    passed: bool | None
    """None when the value is unknown (a price not in the book): neither passed nor failed."""
    meaning: str


@dataclass
class Payback:
    option: str
    hypothetical: bool
    frontier_monthly_usd: float | None
    option_monthly_usd: float | None
    one_time_usd: float
    monthly_savings_usd: float | None
    months: float | None
    """None: never (no saving a month), or unknown when the saving is (`monthly_savings_usd` None)."""
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def months_text(self) -> str:
        if self.months is not None:
            return months_text(self.months)
        return "unknown" if self.monthly_savings_usd is None else "never"


@dataclass
class Advice:
    workload: str
    recommendation: str
    steps: list[Step]
    reasons: list[str]
    dimensions: list[Dimension]
    payback: Payback
    checks: list[Check]
    assumed: list[str]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["payback"]["payback"] = self.payback.months_text  # months null: "never" or "unknown"
        return out


def frontier_monthly_usd(profile: Profile, book: PriceBook, warnings: list[str]) -> float | None:
    v = profile.volume
    if v.frontier_monthly_spend_usd is not None:
        return v.frontier_monthly_spend_usd
    price = book.model(v.frontier_model, warn=False)
    if price is None:
        warnings.append(f"volume.frontier_model: {v.frontier_model!r} is not in the price book; frontier spend is "
                        "unknown (set volume.frontier_monthly_spend_usd)")
        return None
    return v.per_month * price.request_usd(v.input_tokens_per_request, v.output_tokens_per_request)


def _flow(p: Profile, data_cost: float | None) -> tuple[str, list[Step]]:
    th, steps = p.thresholds, []
    vol = p.volume.per_month
    privacy = p.privacy == "restricted"
    q6 = Step("privacy constraints?", privacy,
              "data may not leave the company's infrastructure" if privacy else f"privacy: {p.privacy}; an external API is allowed")

    def after_privacy(managed: bool) -> str:
        steps.append(q6)
        if privacy:
            return OPEN_WEIGHT
        return MANAGED if managed else FRONTIER

    big = vol > th.volume_per_month
    steps.append(Step(f"volume over {th.volume_per_month:,.0f}/month?", big, f"{vol:,.0f} requests/month"))
    if not big:
        return after_privacy(False), steps
    have, need = p.training_data.labelled_examples, p.examples_needed
    enough = have >= need
    steps.append(Step("training data?", enough, f"{have:,} labelled examples of ~{need:,} needed for {p.task_structure}"))
    if not enough:
        budget = p.training_data.data_budget_usd
        creatable = data_cost is not None and budget is not None and data_cost <= budget
        if data_cost is None or budget is None:
            why = "no annotation price or data budget given"
        else:
            why = f"{need - have:,} more examples cost ${data_cost:,.0f} against a ${budget:,.0f} budget"
        steps.append(Step("data creatable within budget?", creatable, why))
        if not creatable:
            return after_privacy(False), steps
    ml = p.ml_capacity != "none"
    steps.append(Step("ML capacity?", ml, f"ml_capacity: {p.ml_capacity}"))
    gap = p.quality_gap_pts
    gap_too_big = gap is not None and gap > th.max_quality_gap_pts
    complex_ = p.task_structure == "complex_reasoning" or gap_too_big
    if p.task_structure == "complex_reasoning":
        why = "the task needs complex reasoning, where small models trail"
    elif gap_too_big:
        why = f"measured quality gap {gap:g} points > {th.max_quality_gap_pts:g} allowed"
    else:
        why = f"{p.task_structure}: a narrow task small models learn well"
    steps.append(Step("complex reasoning?", complex_, why))
    if complex_:
        return after_privacy(False), steps
    if ml:
        return FINE_TUNE, steps
    return after_privacy(True), steps


def _dimensions(p: Profile, data_cost: float | None) -> list[Dimension]:
    th, lat = p.thresholds, p.latency
    vol = p.volume.per_month
    need, have = p.examples_needed, p.training_data.labelled_examples
    out = [
        Dimension("volume", f"{vol:,.0f}/month", "small model" if vol > th.volume_per_month else "frontier",
                  f"{p.volume.per_day:,.0f}/day"),
        Dimension("task structure", p.task_structure,
                  {"complex_reasoning": "frontier", "open_generation": "neutral"}.get(p.task_structure, "small model"),
                  {"complex_reasoning": "small models trail on multi-step reasoning",
                   "open_generation": "open-ended output: small models need more data and evaluation"}.get(
                      p.task_structure, "narrow, repetitive tasks suit small models")),
        Dimension("training data", f"{have:,} of ~{need:,}",
                  "small model" if have >= need else ("neutral" if data_cost is not None else "frontier"),
                  "enough to fine-tune" if have >= need else
                  (f"{need - have:,} more at ~${data_cost:,.0f}" if data_cost is not None else "no annotation price given")),
    ]
    if lat.p95_ms_required is None:
        out.append(Dimension("latency", "no target", "neutral", "no latency requirement given"))
    else:
        tight = lat.p95_ms_required < lat.frontier_p95_ms
        out.append(Dimension("latency", f"p95 <= {lat.p95_ms_required:g} ms", "self-hosted" if tight else "neutral",
                             f"frontier p95 ~{lat.frontier_p95_ms:g} ms" + (" misses it" if tight else " meets it")))
    out += [
        Dimension("privacy", p.privacy, "self-hosted" if p.privacy == "restricted" else "neutral",
                  {"restricted": "data must stay on infrastructure you control", "sensitive": "external APIs under contract",
                   "none": "no constraint"}[p.privacy]),
        Dimension("ML capacity", p.ml_capacity, "frontier" if p.ml_capacity == "none" else "small model",
                  "someone must fine-tune, evaluate and serve the model"),
        Dimension("task stability", p.task_stability,
                  {"stable": "small model", "evolving": "neutral", "volatile": "frontier"}[p.task_stability],
                  f"retrain every {RETRAIN_EVERY_MONTHS[p.task_stability]} month(s)"),
    ]
    gap = p.quality_gap_pts
    if gap is None:
        out.append(Dimension("quality gap", "not measured", "neutral", "measure it: tiergate eval / compare"))
    else:
        ok = gap <= th.max_quality_gap_pts
        out.append(Dimension("quality gap", f"{gap:g} points", "small model" if ok else "frontier",
                             f"limit {th.max_quality_gap_pts:g} points"))
    return out


def _payback(p: Profile, book: PriceBook, option: str, frontier: float | None, data_cost: float | None,
             warnings: list[str]) -> Payback:
    c, v = p.costs, p.volume
    hypothetical = option == FRONTIER
    if hypothetical:
        option = FINE_TUNE
    one: dict[str, float] = {}
    monthly: dict[str, float] = {"evaluation_maintenance": c.evaluation_maintenance_monthly_usd}
    if option != OPEN_WEIGHT and data_cost:
        one["data_preparation"] = data_cost
    every = RETRAIN_EVERY_MONTHS[p.task_stability]
    if option == MANAGED:
        ft = book.model(c.managed_model, warn=False)
        if ft is None:
            warnings.append(f"costs.managed_model: {c.managed_model!r} is not in the price book; payback unknown")
            return Payback(option, hypothetical, frontier, None, 0.0, None, None)
        tokens = max(p.training_data.labelled_examples, p.examples_needed) * (v.input_tokens_per_request + v.output_tokens_per_request)
        train = tokens * c.managed_epochs * (ft.training_per_mtok or 0.0) / 1e6
        one["fine_tuning"] = train
        monthly["inference"] = v.per_month * ft.request_usd(v.input_tokens_per_request, v.output_tokens_per_request)
        monthly["retraining"] = train / every
    else:
        if c.instance_monthly_usd is not None:
            per_instance = c.instance_monthly_usd
        else:
            preset = book.instance(c.instance, warn=False)
            if preset is None:
                warnings.append(f"costs.instance: {c.instance!r} is not in the price book; payback unknown")
                return Payback(option, hypothetical, frontier, None, 0.0, None, None)
            per_instance = preset.monthly_usd
        monthly["infrastructure"] = c.instances * per_instance
        if option == FINE_TUNE:
            one["fine_tuning"] = c.fine_tune_usd
            monthly["retraining"] = c.fine_tune_usd / every
    if c.setup_usd:
        one["setup"] = c.setup_usd
    one_time, option_monthly = sum(one.values()), sum(monthly.values())
    breakdown = {**{f"one_time.{k}": x for k, x in one.items()}, **{f"monthly.{k}": x for k, x in monthly.items()}}
    if frontier is None:
        return Payback(option, hypothetical, None, option_monthly, one_time, None, None, breakdown)
    saving = frontier - option_monthly
    months = (one_time / saving) if saving > 0 else None
    return Payback(option, hypothetical, frontier, option_monthly, one_time, saving, months, breakdown)


def _checks(p: Profile, frontier: float | None) -> list[Check]:
    th, per_day = p.thresholds, p.volume.per_day
    spend = frontier
    return [
        Check("volume over the decision threshold", p.volume.per_month, th.volume_per_month,
              p.volume.per_month > th.volume_per_month, "enough volume for a fine-tuned model to pay back"),
        Check("single workload frontier spend a month", spend, th.workload_spend_usd,
              None if frontier is None else frontier > th.workload_spend_usd, "worth a migration project on its own"),
        Check("conversations a day (self-hosting)", per_day, th.self_host_per_day, per_day > th.self_host_per_day,
              "self-hosting pays above this daily volume"),
        Check("frontier spend a month (self-hosting)", spend, th.self_host_spend_usd,
              None if frontier is None else frontier > th.self_host_spend_usd,
              "self-hosting pays above this monthly spend"),
    ]


def advise(profile: Profile, book: PriceBook) -> Advice:
    warnings: list[str] = []
    td = profile.training_data
    missing = max(0, profile.examples_needed - td.labelled_examples)
    data_cost = (missing * td.annotation_price_per_example_usd
                 if td.annotation_price_per_example_usd is not None else (0.0 if missing == 0 else None))
    recommendation, steps = _flow(profile, data_cost)
    frontier = frontier_monthly_usd(profile, book, warnings)
    payback = _payback(profile, book, recommendation, frontier, data_cost, warnings)
    dims = _dimensions(profile, data_cost)
    reasons = [f"{s.question} {'yes' if s.answer else 'no'}: {s.reason}" for s in steps]
    if profile.task_stability == "volatile" and recommendation in (FINE_TUNE, MANAGED):
        reasons.append("the task is volatile: budget a retrain every month and keep the frontier as fallback")
    lat = profile.latency
    if lat.p95_ms_required is not None and lat.p95_ms_required < lat.frontier_p95_ms and recommendation in (FRONTIER, MANAGED):
        reasons.append(f"latency target p95 {lat.p95_ms_required:g} ms is tighter than the frontier's ~{lat.frontier_p95_ms:g} ms")
    if profile.quality_gap_pts is None and recommendation != FRONTIER:
        reasons.append("the quality gap is not measured yet: evaluate before cutting over (tiergate eval, shadow rollout)")
    if payback.months is not None:
        label = "if fine-tuned, payback" if payback.hypothetical else "payback"
        when = "immediate" if payback.months == 0 else f"in {months_text(payback.months)}"
        reasons.append(f"{label} {when} (${payback.one_time_usd:,.0f} one-time, "
                       f"${payback.monthly_savings_usd or 0:,.0f}/month saved)")
    elif payback.monthly_savings_usd is not None and not payback.hypothetical:
        reasons.append(f"it costs ${-payback.monthly_savings_usd:,.0f}/month more than the frontier API: "
                       "the move is for the constraints above, not for savings")
    assumed = profile.assumed()
    if frontier is None:  # not estimated either: the frontier model has no price (see the warnings)
        assumed = [a for a in assumed if not a.startswith("volume.frontier_monthly_spend_usd")]
    return Advice(profile.workload, recommendation, steps, reasons, dims, payback, _checks(profile, frontier),
                  assumed, warnings)


def advise_file(path: str | os.PathLike[str], pricebook: str | os.PathLike[str] | None = None) -> Advice:
    """Load a profile file and its price book (`pricebook` wins over the profile's own) and advise."""
    from tiergate.costs.pricebook import load_pricebook
    from tiergate.costs.profile import load_profile

    profile = load_profile(path)
    return advise(profile, load_pricebook(pricebook if pricebook is not None else profile.pricebook))


def months_text(months: float) -> str:
    if months == 0:
        return "immediate"
    if months < 1:
        days = round(months * DAYS_PER_MONTH)
        return f"{days} day" + ("s" if days > 1 else "") if days else "under a day"
    return f"{months:.1f} months"


def render_advice(advice: Advice, console: Console) -> None:
    from rich.table import Table

    console.print(f"[bold]{advice.workload}[/bold]: [bold green]{advice.recommendation}[/bold green]")
    for reason in advice.reasons:
        console.print(f"  - {reason}")
    dims = Table(title="the eight dimensions", title_justify="left")
    for col in ("dimension", "value", "favours", "note"):
        dims.add_column(col)
    for d in advice.dimensions:
        dims.add_row(d.name, d.value, d.favours, d.note)
    console.print(dims)
    pb = advice.payback
    title = f"payback: {pb.option}" + (" (if you fine-tuned anyway)" if pb.hypothetical else "")
    money = Table(title=title, title_justify="left")
    money.add_column("item")
    money.add_column("USD", justify="right")
    for key, value in [("frontier spend a month", pb.frontier_monthly_usd), (f"{pb.option} a month", pb.option_monthly_usd),
                       ("saved a month", pb.monthly_savings_usd), ("one-time", pb.one_time_usd)]:
        money.add_row(key, "unknown" if value is None else f"{value:,.0f}")
    money.add_row("payback", pb.months_text)
    console.print(money)
    checks = Table(title="rules of thumb", title_justify="left")
    for col in ("check", "value", "threshold", "passes"):
        checks.add_column(col, justify="left" if col == "check" else "right")
    for c in advice.checks:
        checks.add_row(c.rule, "unknown" if c.value is None else f"{c.value:,.0f}", f"{c.threshold:,.0f}",
                       "unknown" if c.passed is None else "[green]yes[/green]" if c.passed else "[red]no[/red]")
    console.print(checks)
    if advice.assumed:
        console.print("[yellow]assumed (not in the profile)[/yellow]: " + ", ".join(advice.assumed))
    for w in advice.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}")


__all__ = ["Advice", "OUTCOMES", "FINE_TUNE", "OPEN_WEIGHT", "MANAGED", "FRONTIER", "advise", "advise_file", "render_advice", "DAYS_PER_MONTH"]
