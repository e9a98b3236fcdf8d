"""The TCO report: a JSON-ready dict built from a TcoModel, and its rendering for the terminal.

    report = run_scenario("examples/tco/document-classification.yaml")
    report = build_report(model)           # {"paths": {...}, "savings_pct": 85.4, "break_even_monthly_volume": ...}
    render_console(report, Console())      # comparison table, savings, break-even, sensitivity
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from tiergate.costs.tco import COMPONENTS, KNOB_LABELS, Knobs, ranged
from tiergate.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from tiergate.costs.tco import TcoModel

DEFINITIONS = {
    "monthly_usd": "recurring cost (all but one-time costs) averaged over the horizon",
    "one_time_usd": "fine-tuning, data preparation and other one-time costs, paid in month 1",
    "total_usd": "all costs over the horizon",
    "savings_pct": "(baseline total - candidate total) / baseline total x 100; null when the baseline costs nothing",
    "savings_usd_by_path": "baseline total - that path's total, over the horizon",
    "break_even_monthly_volume": (
        "lowest first-month volume (requests/month) at which the candidate's horizon TCO is no higher than the "
        "baseline's: monthly costs equal once one-time costs are amortised over the horizon; null if never"),
    "payback_months": "months until the candidate's cumulative cost, one-time costs up front, falls to the baseline's",
    "sensitivity": "each input changed alone by change_pct, everything else as in the scenario",
}


def _usd(x: float) -> float:
    return round(x, 2)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def build_report(model: TcoModel) -> dict[str, Any]:
    sc, book = model.scenario, model.book
    base, cand = sc.baseline or "", sc.candidate or ""
    res = model.run()
    for name, r in res.items():
        if not all(math.isfinite(x) for x in (*r.components.values(), *r.monthly, r.per_request_usd)):
            raise ConfigError(f"{sc.name}: paths.{name}: its costs overflow (not a finite number of dollars); check "
                              "the volume, token and price figures")
    be = model.break_even_volume()
    spans = (model.run(k=Knobs(pick="lo")), model.run(k=Knobs(pick="hi"))) if ranged(sc) else None
    paths: dict[str, Any] = {}
    for name, r in res.items():
        spec, p = sc.paths[name], model.prices[name]
        entry: dict[str, Any] = {
            "label": spec.label or name,
            "kind": spec.kind,
            "monthly_usd": _usd(r.monthly_usd),
            "one_time_usd": _usd(r.one_time_usd),
            "total_usd": _usd(r.total_usd),
            "first_month_recurring_usd": _usd(r.monthly[0]),
            "last_month_recurring_usd": _usd(r.monthly[-1]),
            "per_request_usd": round(r.per_request_usd, 8),
            "components_usd": {k: _usd(v) for k, v in r.components.items()},
            "prices": {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok, "source": p.source},
        }
        if spec.infrastructure is not None:
            entry["prices"].update(instance_monthly_usd=_usd(p.instance_monthly_usd), instance_source=p.instance_source)
            entry["instances"] = {"first_month": r.instances[0], "last_month": r.instances[-1], "max": max(r.instances)}
        if spans is not None and spans[0][name].total_usd != spans[1][name].total_usd:
            lo, hi = spans[0][name], spans[1][name]
            entry["total_usd_range"] = [_usd(lo.total_usd), _usd(hi.total_usd)]
            entry["one_time_usd_range"] = [_usd(lo.one_time_usd), _usd(hi.one_time_usd)]
        paths[name] = entry
    report: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "source": sc.source,
        "horizon_months": sc.horizon_months,
        "pricebook": {"source": book.source, "as_of": str(book.as_of)},
        "inputs": {
            "requests_per_month": sc.volume.requests_per_month,
            "growth_pct_per_month": sc.volume.growth_pct_per_month,
            "input_tokens_per_request": sc.tokens.input_per_request,
            "output_tokens_per_request": sc.tokens.output_per_request,
        },
        "baseline": base,
        "candidate": cand,
        "paths": paths,
        "savings_pct": _pct(model.savings_pct(res)),
        "savings_usd": _usd(res[base].total_usd - res[cand].total_usd),
        "savings_pct_by_path": {n: _pct(model.savings_pct(res, n)) for n in res if n != base},
        "savings_usd_by_path": {n: _usd(res[base].total_usd - r.total_usd) for n, r in res.items() if n != base},
        "break_even_monthly_volume": None if be is None else round(be, 2),
        "payback_months": None if (pb := model.payback_months(res)) is None else round(pb, 3),
        "monthly_recurring_usd": {n: [_usd(x) for x in r.monthly] for n, r in res.items()},
        "sensitivity": [
            {**row, "baseline_total_usd": _usd(row["baseline_total_usd"]),
             "candidate_total_usd": _usd(row["candidate_total_usd"]), "savings_pct": _pct(row["savings_pct"]),
             "break_even_monthly_volume": None if row["break_even_monthly_volume"] is None
             else round(row["break_even_monthly_volume"], 2)}
            for row in model.sensitivity()
        ],
        "curve": (curve := model.curve(be)),
        "definitions": DEFINITIONS,
        "notes": [n for p in model.prices.values() for n in p.notes],
    }
    curve["volumes"] = [round(v, 2) for v in curve["volumes"]]
    curve["total_usd"] = {n: [_usd(x) for x in xs] for n, xs in curve["total_usd"].items()}
    if spans is not None:
        pcts = [p for p in (model.savings_pct(s) for s in spans) if p is not None]
        if len(pcts) == len(spans):
            report["savings_pct_range"] = [round(min(pcts), 2), round(max(pcts), 2)]
    return report


def money(x: float | None) -> str:
    if x is None or x == 0:
        return "-"
    sign, x = ("-" if x < 0 else ""), abs(x)
    return f"{sign}${x:,.0f}" if x >= 100 else f"{sign}${x:,.2f}"


def pct_text(x: float | None) -> str:
    """A savings share; 'n/a' when undefined (the baseline costs nothing), never a made-up 0%."""
    return "n/a" if x is None else f"{x:.1f}%"


def volume_text(v: float | None) -> str:
    return "never (within 10^13/month)" if v is None else f"{v:,.0f} requests/month"


def payback_text(months: float | None) -> str:
    if months is None:
        return "not within the horizon"
    if months == 0:
        return "immediate (the candidate is never dearer)"
    if months < 1:
        days = round(months * 365 / 12)
        return f"{months:.2f} months (~{days} day{'s' if days > 1 else ''})" if days else f"{months:.3f} months (under a day)"
    return f"{months:.1f} months"


def also_lines(report: dict[str, Any]) -> list[str]:
    """The other paths against the baseline: savings share and amount over the horizon, beside their total."""
    paths, months = report["paths"], report["horizon_months"]
    return [f"{paths[n]['label']}: {pct_text(pct)} savings, {money(report['savings_usd_by_path'][n])} over {months} "
            f"months ({months}-month total {money(paths[n]['total_usd'])})"
            for n, pct in report["savings_pct_by_path"].items() if n != report["candidate"]]


def render_console(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    paths = report["paths"]
    names = list(paths)
    months = report["horizon_months"]
    table = Table(title=f"{months}-month TCO: {report['scenario']} (prices as of {report['pricebook']['as_of']})",
                  title_justify="left")
    table.add_column("component")
    for n in names:
        table.add_column(paths[n]["label"], justify="right")
    for key, label in COMPONENTS.items():
        values = [paths[n]["components_usd"][key] for n in names]
        if any(values):
            table.add_row(label, *[money(v) for v in values])
    table.add_section()
    table.add_row("per month (average)", *[money(paths[n]["monthly_usd"]) for n in names])
    table.add_row("one-time", *[money(paths[n]["one_time_usd"]) for n in names])
    totals = []
    for n in names:
        text = money(paths[n]["total_usd"])
        if "total_usd_range" in paths[n]:
            lo, hi = paths[n]["total_usd_range"]
            text += f"\n({money(lo)}-{money(hi)})"
        totals.append(text)
    table.add_row(f"[bold]{months}-month total[/bold]", *[f"[bold]{t}[/bold]" for t in totals])
    console.print(table)
    base, cand = paths[report["baseline"]], paths[report["candidate"]]
    rng = report.get("savings_pct_range")
    extra = f" (range {rng[0]:.1f}-{rng[1]:.1f}%)" if rng else ""
    undefined = " (the baseline costs nothing: no percentage)" if report["savings_pct"] is None else ""
    console.print(f"[bold]savings[/bold]: {pct_text(report['savings_pct'])}{extra}{undefined}, "
                  f"{money(report['savings_usd'])} over {months} months: {cand['label']} instead of {base['label']}")
    for line in also_lines(report):
        console.print(f"  also: {line}")
    console.print(f"[bold]break-even[/bold]: {volume_text(report['break_even_monthly_volume'])} "
                  f"(scenario: {report['inputs']['requests_per_month']:,.0f})")
    pb = report["payback_months"]
    console.print("[bold]payback[/bold]: " + payback_text(pb))
    sens = Table(title="sensitivity: savings (break-even volume) when one input changes", title_justify="left")
    sens.add_column("input")
    changes = sorted({row["change_pct"] for row in report["sensitivity"]})
    for c in changes:
        sens.add_column(f"{c:+g}%", justify="right")
    for knob, label in KNOB_LABELS.items():
        cells = []
        for c in changes:
            row = next(r for r in report["sensitivity"] if r["input"] == knob and r["change_pct"] == c)
            be = row["break_even_monthly_volume"]
            cells.append(f"{pct_text(row['savings_pct'])} ({'-' if be is None else f'{be:,.0f}'})")
        sens.add_row(label, *cells)
    console.print(sens)
    for note in report["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")


def run_scenario(path: str | os.PathLike[str], pricebook: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load a scenario file and its price book (`pricebook` wins over the scenario's own) and build the report."""
    from tiergate.costs.pricebook import load_pricebook
    from tiergate.costs.scenario import load_scenario
    from tiergate.costs.tco import TcoModel

    scenario = load_scenario(path)
    book = load_pricebook(pricebook if pricebook is not None else scenario.pricebook)
    return build_report(TcoModel(scenario, book))
