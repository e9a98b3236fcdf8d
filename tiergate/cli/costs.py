"""Cost commands: `tiergate tco` (3-year TCO and break-even of a scenario) and `tiergate advise` (the decision
framework on a workload profile). Spend reports from captured traffic (`costs report`) build on
`tiergate.costs.report.counterfactual` once the store is wired."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

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


def _write(path: Path, write: Callable[[Path], Any], what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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
    from rich.console import Console

    from tiergate.costs.tco_report import render_console, run_scenario

    report = _call(run_scenario, scenario, pricebook)
    render_console(report, Console())
    png: bytes | None = None
    if not no_chart:
        from tiergate.costs.tco_html import chart_png

        png = chart_png(report)
        data = png
        _write(chart or Path(f"{report['scenario']}-tco.png"), lambda p: p.write_bytes(data), "chart")
    if json_path is not None:
        _write(json_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"), "JSON report")
    if html_path is not None:
        from tiergate.costs.tco_html import write_html

        _write(html_path, lambda p: write_html(report, p, png), "HTML report")


def advise(
    profile: Path = typer.Option(..., "--profile", "-p", help="workload profile YAML (see examples/advise/)"),
    json_path: Path | None = typer.Option(None, "--json", help="write the advice as JSON here"),
    pricebook: Path | None = typer.Option(None, "--pricebook", help="price-book override YAML"),
) -> None:
    """Should this workload move off the frontier API, and to what?

    The decision flow over the eight dimensions of a workload profile, with reasons, the payback period and the rule-of-thumb checks."""
    from rich.console import Console

    from tiergate.costs.advisor import advise_file, render_advice

    advice = _call(advise_file, profile, pricebook)
    render_advice(advice, Console())
    if json_path is not None:
        body = json.dumps(advice.to_dict(), indent=2) + "\n"
        _write(json_path, lambda p: p.write_text(body, encoding="utf-8"), "JSON advice")


def register(app: typer.Typer) -> None:
    app.command("tco")(tco)
    app.command("advise")(advise)
