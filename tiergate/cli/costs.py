"""Cost commands: `tiergate costs report` (spend from captured traffic against the all-frontier counterfactual),
`tiergate tco` (3-year TCO and break-even of a scenario) and `tiergate advise` (the decision framework on a
workload profile, from a file or from captured traffic)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

from tiergate.cli.common import (
    ConfigOption,
    DbOption,
    check_output_file,
    console,
    get_config,
    open_engine,
    warn_unknown_tiers,
)

T = TypeVar("T")

@contextmanager
def _price_warnings() -> Iterator[None]:
    """Show unknown-price warnings as plain `warning:` lines rather than Python warning tracebacks."""
    from tiergate.costs.pricebook import UnknownPriceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownPriceWarning)
        yield
    for w in caught:
        typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)


def _call(fn: Callable[..., T], *args: Any) -> T:
    with _price_warnings():
        return fn(*args)


def _outputs(*pairs: tuple[Path | None, str]) -> None:
    """Refuse, before any work, an output path that cannot be written (its folder is created, as every
    command's output checks do)."""
    for path, option in pairs:
        if path is not None:
            check_output_file(path, option)


def _write(path: Path, write: Callable[[Path], Any], what: str) -> None:
    write(path)
    typer.echo(f"wrote {what}: {path}")


def tco(
    scenario: Path = typer.Option(..., "--scenario", "-s", help="TCO scenario YAML (see examples/tco/)"),
    json_path: Path | None = typer.Option(None, "--json", help="write the full report as JSON here"),
    html_path: Path | None = typer.Option(None, "--html", help="write a self-contained HTML report here"),
    chart: Path | None = typer.Option(None, "--chart", help="PNG chart path (default: <scenario name>-tco.png in the current folder)"),
    no_chart: bool = typer.Option(False, "--no-chart", help="do not write the PNG chart"),
    pricebook: Path | None = typer.Option(None, "--pricebook", help="price-book override YAML"),
) -> None:
    """3-year TCO of the frontier path against the small-model path.

    Every cost component, savings, break-even monthly volume, payback, a sensitivity table, and the TCO curve over volumes as a PNG chart (and, with --html, a self-contained report)."""
    from tiergate.costs.tco_report import render_console, run_scenario

    _outputs((json_path, "--json"), (html_path, "--html"), (None if no_chart else chart, "--chart"))
    report = _call(run_scenario, scenario, pricebook)
    if not no_chart and chart is None:
        chart = check_output_file(Path(f"{report['scenario']}-tco.png"), "--chart")
    render_console(report, console())
    png: bytes | None = None
    if chart is not None and not no_chart:
        from tiergate.costs.tco_html import chart_png

        png = chart_png(report)
        data = png
        _write(chart, lambda p: p.write_bytes(data), "chart")
    if json_path is not None:
        _write(json_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"), "JSON report")
    if html_path is not None:
        from tiergate.costs.tco_html import write_html

        _write(html_path, lambda p: write_html(report, p, png), "HTML report")


def advise(
    profile: Path | None = typer.Option(None, "--profile", "-p", help="workload profile YAML (see examples/advise/)"),
    from_traffic: bool = typer.Option(False, "--from-traffic", help="fill the profile from captured traffic"),
    workload: str | None = typer.Option(None, "--workload", "-w", help="with --from-traffic: this workload (default: each one)"),
    answers: Path | None = typer.Option(None, "--answers", help="with --from-traffic: YAML of what traffic cannot show "
                                        "(ml_capacity, task_stability, training_data, costs, ...)"),
    since: str | None = typer.Option(None, "--since", help="with --from-traffic: window, e.g. 7d, 12h or an ISO date; 'all' (the default) for everything"),
    json_path: Path | None = typer.Option(None, "--json", help="write the advice as JSON here"),
    pricebook: Path | None = typer.Option(None, "--pricebook", help="price-book override YAML"),
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
) -> None:
    """Should this workload move off the frontier API, and to what?

    The decision flow over the eight dimensions of a workload profile (a file, or --from-traffic: captured volume, spend, tokens and answer structure), with reasons, the payback period and the rule-of-thumb checks."""
    from tiergate.costs.advisor import advise as run_advice
    from tiergate.costs.advisor import advise_file, render_advice

    out = console()
    if (profile is None) == (not from_traffic):
        raise typer.BadParameter("give --profile FILE or --from-traffic (one of them)")
    _outputs((json_path, "--json"))
    if profile is not None:
        advice = _call(advise_file, profile, pricebook)
        render_advice(advice, out)
        result: Any = advice.to_dict()
    else:
        from tiergate.costs._files import read_yaml_mapping
        from tiergate.costs.pricebook import load_pricebook
        from tiergate.costs.report import parse_since
        from tiergate.costs.traffic_profile import traffic_profiles

        cfg = get_config(config, db)
        given = read_yaml_mapping(answers, "answers") if answers is not None else None
        book = _call(load_pricebook, pricebook if pricebook is not None else cfg.pricebook)
        skipped: list[str] = []
        pairs = _call(lambda: traffic_profiles(open_engine(cfg, create=False), cfg, workload=workload, answers=given,
                                               since=parse_since(since), book=book,
                                               answers_source=str(answers), skipped=skipped))
        for reason in skipped:
            typer.secho(f"skipped: {reason}", fg=typer.colors.YELLOW, err=True)
        result = {}
        for prof, stats in pairs:
            st = stats["_structure"]
            out.print(f"[dim]{prof.workload}: {stats['requests']:,} answered requests over {stats['days']:.2f} days; "
                          f"answers: {st['kind']} ({st['distinct_answers']:,} distinct of {st['answers']:,}); task from "
                          f"{stats['_task_from']}; frontier spend = all on {stats['_baseline_tier'] or 'unknown'}; tokens "
                          f"{stats['_tokens_from']}[/dim]")
            advice = _call(run_advice, prof, book)
            render_advice(advice, out)
            result[prof.workload] = {**advice.to_dict(), "traffic": stats, "profile": prof.model_dump(mode="json")}
    if json_path is not None:
        body = json.dumps(result, indent=2, default=str) + "\n"
        _write(json_path, lambda p: p.write_text(body, encoding="utf-8"), "JSON advice")


def costs_report(
    since: str | None = typer.Option("7d", "--since", help="window: 30m, 12h, 7d, 2w or an ISO date; 'all' for everything"),
    workload: str | None = typer.Option(None, "--workload", "-w", help="only this workload"),
    baseline: str | None = typer.Option(None, "--baseline", help="tier to measure savings against (default: the most "
                                        "expensive external tier on this traffic)"),
    json_path: Path | None = typer.Option(None, "--json", help="write the full report as JSON here"),
    chart: Path | None = typer.Option(None, "--chart", help="write a PNG chart here"),
    html_path: Path | None = typer.Option(None, "--html", help="write a self-contained HTML report here"),
    pricebook: Path | None = typer.Option(None, "--pricebook", help="price-book override YAML"),
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
) -> None:
    """Spend by workload, tier and day from captured traffic, against the same traffic all on each tier.

    Primary and cascade first-attempt records are the spend; shadow calls are shown apart. Unpriced records (no known price) are counted and flagged, never taken as zero."""
    from tiergate.costs.pricebook import load_pricebook
    from tiergate.costs.report import parse_since, spend_report
    from tiergate.costs.spend_render import chart_png, render_console, write_html

    _outputs((json_path, "--json"), (chart, "--chart"), (html_path, "--html"))
    cfg = get_config(config, db)
    book = _call(load_pricebook, pricebook if pricebook is not None else cfg.pricebook)
    start = parse_since(since)
    report = spend_report(open_engine(cfg, create=False), cfg, since=start, workload=workload, baseline=baseline,
                          book=book)
    render_console(report, console())
    warn_unknown_tiers([*report["spend"]["by_tier"], *report["shadow"]["by_tier"]], cfg, config is not None)
    png = chart_png(report) if chart is not None or html_path is not None else None
    if chart is not None and png is not None:
        data = png
        _write(chart, lambda p: p.write_bytes(data), "chart")
    if json_path is not None:
        _write(json_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"), "JSON report")
    if html_path is not None:
        _write(html_path, lambda p: write_html(report, p, png), "HTML report")


def register(app: typer.Typer) -> None:
    costs = typer.Typer(name="costs", help="Spend and savings from captured traffic.", no_args_is_help=True)
    costs.command("report")(costs_report)
    app.add_typer(costs)
    app.command("tco")(tco)
    app.command("advise")(advise)
