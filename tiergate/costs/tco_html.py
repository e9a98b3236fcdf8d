"""The TCO chart (PNG) and a self-contained HTML report (chart embedded as base64), from a TCO report dict.

    png = chart_png(report)                   # bytes; matplotlib (Agg) is imported here, not before
    write_html(report, "tco.html", png)
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from tiergate.costs.tco import COMPONENTS, KNOB_LABELS
from tiergate.costs.tco_report import also_lines, money, payback_text, pct_text, volume_text


def chart_png(report: dict[str, Any]) -> bytes:
    """Left: horizon TCO of each path over a range of monthly volumes, with break-even and the scenario's
    volume marked. Right: cumulative cost month by month at the scenario's volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paths, curve = report["paths"], report["curve"]
    months = report["horizon_months"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, totals in curve["total_usd"].items():
        ax1.plot(curve["volumes"], totals, label=paths[name]["label"], linewidth=2)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("requests per month")
    ax1.set_ylabel(f"{months}-month TCO (USD)")
    ax1.set_title(f"{months}-month TCO by monthly volume")
    v0 = report["inputs"]["requests_per_month"]
    ax1.axvline(v0, color="grey", linestyle=":", label=f"scenario: {v0:,.0f}/month")
    be = report["break_even_monthly_volume"]
    if be:
        ax1.axvline(be, color="black", linestyle="--", label=f"break-even: {be:,.0f}/month")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    for name, series in report["monthly_recurring_usd"].items():
        total = paths[name]["one_time_usd"]
        cumulative = [total]
        for x in series:
            total += x
            cumulative.append(total)
        ax2.plot(range(0, months + 1), cumulative, label=paths[name]["label"], linewidth=2)
    ax2.set_xlabel("month")
    ax2.set_ylabel("cumulative cost (USD)")
    ax2.set_title(f"cumulative cost at {v0:,.0f} requests/month")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"${y:,.0f}"))
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{report['scenario']}: savings {pct_text(report['savings_pct'])}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_chart(report: dict[str, Any], path: str | os.PathLike[str]) -> bytes:
    png = chart_png(report)
    Path(path).write_bytes(png)
    return png


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any], png: bytes) -> str:
    paths, names = report["paths"], list(report["paths"])
    months = report["horizon_months"]
    comp_rows = [[label, *[money(paths[n]["components_usd"][k]) for n in names]]
                 for k, label in COMPONENTS.items() if any(paths[n]["components_usd"][k] for n in names)]
    comp_rows += [["per month (average)", *[money(paths[n]["monthly_usd"]) for n in names]],
                  ["one-time", *[money(paths[n]["one_time_usd"]) for n in names]],
                  [f"{months}-month total", *[money(paths[n]["total_usd"]) for n in names]]]
    price_rows = [[paths[n]["label"], f"${paths[n]['prices']['input_per_mtok']:g} / ${paths[n]['prices']['output_per_mtok']:g}",
                   f"{paths[n]['per_request_usd']:.6f}", paths[n]["prices"]["source"],
                   paths[n]["prices"].get("instance_source", "")] for n in names]
    changes = sorted({r["change_pct"] for r in report["sensitivity"]})
    sens_rows = []
    for knob, label in KNOB_LABELS.items():
        row = [label]
        for c in changes:
            r = next(r for r in report["sensitivity"] if r["input"] == knob and r["change_pct"] == c)
            be = r["break_even_monthly_volume"]
            row.append(f"{pct_text(r['savings_pct'])} ({'-' if be is None else f'{be:,.0f}'})")
        sens_rows.append(row)
    pb = report["payback_months"]
    rng = report.get("savings_pct_range")
    summary = [
        f"Savings: <b>{pct_text(report['savings_pct'])}</b>" + (f" (range {rng[0]:.1f}-{rng[1]:.1f}%)" if rng else "")
        + f", {html.escape(money(report['savings_usd']))} over {months} months",
        *[f"Also: {html.escape(line)}" for line in also_lines(report)],
        f"Break-even: <b>{html.escape(volume_text(report['break_even_monthly_volume']))}</b> "
        f"(scenario: {report['inputs']['requests_per_month']:,.0f})",
        "Payback: " + html.escape(payback_text(pb)),
    ]
    defs = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in report["definitions"].items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"])
    img = base64.b64encode(png).decode("ascii")
    title = html.escape(f"TCO: {report['scenario']}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<p>{html.escape(report['description'])}</p>
<p>{'<br>'.join(summary)}</p>
<img alt="TCO chart" src="data:image/png;base64,{img}">
<h2>Cost components over {months} months</h2>
{_table(["component", *[paths[n]['label'] for n in names]], comp_rows)}
<h2>Prices</h2>
<p>Price book: {html.escape(report['pricebook']['source'])}, as of {html.escape(report['pricebook']['as_of'])}.
Source of the scenario's numbers: {html.escape(report['source'] or '-')}</p>
{_table(["path", "input / output per M tokens", "inference USD per request", "token prices from", "instance price from"], price_rows)}
<h2>Sensitivity</h2>
<p>Savings (and break-even monthly volume) when one input changes and the rest stay as in the scenario.</p>
{_table(["input", *[f"{c:+g}%" for c in changes]], sens_rows)}
<h2>Definitions</h2><ul>{defs}</ul>
{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}
</body></html>
"""


def write_html(report: dict[str, Any], path: str | os.PathLike[str], png: bytes | None = None) -> None:
    Path(path).write_text(render_html(report, png if png is not None else chart_png(report)), encoding="utf-8")
