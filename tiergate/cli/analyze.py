"""`tiergate analyze`: workload discovery on captured traffic (clusters, their structure, specificity, volume,
quadrant and projected saving on the small tier)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tiergate.cli.common import ConfigOption, DbOption, check_output_file, console, get_config, open_engine


def analyze(
    since: str | None = typer.Option("30d", "--since", help="window: 30m, 12h, 7d, 2w or an ISO date; 'all' for everything"),
    clusters: str = typer.Option("auto", "--clusters", help="'auto' (k by silhouette) or a number of clusters"),
    workload: str | None = typer.Option(None, "--workload", "-w", help="only requests named this workload"),
    small_tier: str | None = typer.Option(None, "--small-tier", help="tier to project savings on (default: the "
                                          "cheapest on-prem tier on this traffic)"),
    spec_threshold: float = typer.Option(0.3, "--specificity-threshold", help="quadrant line: specificity"),
    volume_threshold: float | None = typer.Option(None, "--volume-threshold", help="quadrant line: requests a month "
                                                  "(default: the advisor's volume threshold)"),
    system_weight: float = typer.Option(0.5, "--system-weight", help="weight of the system-prompt embedding (user text: 1; 0 leaves it out)"),
    answer_weight: float = typer.Option(0.5, "--answer-weight", help="weight of the answer form: short, JSON or text (0 leaves it out)"),
    min_share: float = typer.Option(0.05, "--min-share", help="with auto: groups under this share of the traffic "
                                    "are pooled as 'other'"),
    max_requests: int = typer.Option(20000, "--max-requests", help="beyond this many, analyse a systematic sample (every n-th request)"),
    json_path: Path | None = typer.Option(None, "--json", help="write the analysis as JSON here"),
    chart: Path | None = typer.Option(None, "--chart", help="write the quadrant chart (PNG) here"),
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
) -> None:
    """Discover workloads in captured traffic and place each on the suitability quadrant.

    Embeds each request (bundled MiniLM: user text, with the system prompt and the answer's form as lighter context), clusters them, and reports per cluster: volume, spend, output structure (label, JSON, free text), repetitiveness, specificity, a representative request, its quadrant and the projected monthly saving on the small tier."""
    from tiergate.analyze.discover import analyze_store
    from tiergate.analyze.render import quadrant_png, render_console
    from tiergate.costs.report import parse_since

    if clusters != "auto" and not (clusters.isdigit() and int(clusters) >= 1):
        raise typer.BadParameter(f"--clusters {clusters!r}: 'auto' or a positive number")
    for path, option in ((json_path, "--json"), (chart, "--chart")):
        if path is not None:
            check_output_file(path, option)
    cfg = get_config(config, db)
    start = parse_since(since)
    result = analyze_store(open_engine(cfg, create=False), cfg, since=start, workload=workload,
                           clusters=clusters if clusters == "auto" else int(clusters), small_tier=small_tier,
                           max_requests=max_requests, spec_threshold=spec_threshold,
                           volume_threshold=volume_threshold, system_weight=system_weight,
                           answer_weight=answer_weight, min_share=min_share)
    report = result.to_dict()
    render_console(report, console())
    for path, data, what in ((json_path, lambda: (json.dumps(report, indent=2) + "\n").encode(), "JSON analysis"),
                             (chart, lambda: quadrant_png(report), "quadrant chart")):
        if path is not None:
            path.write_bytes(data())
            typer.echo(f"wrote {what}: {path}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
