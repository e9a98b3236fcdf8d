"""The spend report (`tiergate.costs.report.spend_report`) for people: terminal tables, a PNG chart and a
self-contained HTML page. The same tables feed the terminal and the page.

    render_console(report, Console())
    png = chart_png(report)                  # matplotlib (Agg) is imported here, not before
    write_html(report, "spend.html", png)
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

Table_ = tuple[str, list[str], list[list[str]]]


def usd(x: float | None) -> str:
    """Dollars with the precision small amounts need; None (an unknown price) is 'unknown', never $0."""
    if x is None:
        return "unknown"
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a >= 100:
        return f"{sign}${a:,.0f}"
    if a >= 1 or a == 0:
        return f"{sign}${a:,.2f}"
    # four significant digits in fixed point (never 1.5e-05); below a millionth of a cent, $0.0000000
    decimals = min(10, 3 - math.floor(math.log10(a)))
    text = f"{a:.{decimals}f}".rstrip("0")
    if float(text) == 0:
        return "$0.00"
    whole, frac = text.split(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}%"


def _unpriced(n: int) -> str:
    return f"{n:,} unpriced" if n else ""


def _cost(s: dict[str, Any]) -> str:
    """A bucket's cost; 'unknown' (cost_usd None) when none of its records has a price (a partial sum is flagged
    beside it)."""
    return usd(s["cost_usd"])


def _basis(cf: dict[str, Any]) -> str:
    """How a counterfactual counted tokens (see tiergate.costs.token_basis); '' for reports made before it."""
    basis = cf.get("basis")
    return basis["label"] if basis else ""


def basis_line(report: dict[str, Any]) -> str | None:
    """The baseline's token basis in words, when any request was not answered on it."""
    base = report["baseline"]
    basis = base.get("basis") if base else None
    if not basis or not (basis["measured"] or basis["ratio"] or basis["same_tokens"]):
        return None
    text = f"tokens on {base['tier']}: {basis['label']}"
    if basis["same_tokens"]:
        text += (f"; their workloads have no shadow or cascade pairs with {base['tier']}, so "
                 f"{basis['same_tokens']:,} requests are priced with their own tier's token counts")
    return text


def net_savings(report: dict[str, Any]) -> float | None:
    """The saving against the baseline less what shadow calls (rollout evidence, verification) cost; None when
    either is unknown."""
    base, shadow = report["baseline"], report["shadow"]["cost_usd"]
    if not base or base["savings_usd"] is None or (report["shadow"]["requests"] and shadow is None):
        return None
    return base["savings_usd"] - (shadow or 0.0)


def tables(report: dict[str, Any]) -> list[Table_]:
    """(title, header, rows) of every table of the report, formatted."""
    spend, base = report["spend"], report["baseline"]
    out: list[Table_] = []
    rows = []
    for w, tiers in spend["by_workload_tier"].items():
        for t, s in tiers.items():
            rows.append([w, t, f"{s['requests']:,}", f"{s['cascade_first']:,}" if s["cascade_first"] else "",
                         f"{s['prompt_tokens']:,}", f"{s['completion_tokens']:,}", _cost(s),
                         _unpriced(s["unpriced_requests"])])
    rows.append(["all", "", f"{spend['requests']:,}", f"{spend['cascade_first']:,}" if spend["cascade_first"] else "",
                 f"{spend['prompt_tokens']:,}", f"{spend['completion_tokens']:,}", usd(spend["cost_usd"]),
                 _unpriced(spend["unpriced_requests"])])
    out.append(("spend by workload and tier", ["workload", "tier", "requests", "cascade first", "prompt tok",
                                                "completion tok", "cost", "flags"], rows))
    bname = base["tier"] if base else None
    # savings compare like with like: the baseline's cost of the records whose actual cost is known
    like = " (priced records)" if spend["unpriced_requests"] else ""
    day_rows = []
    for d, s in spend["by_day"].items():
        cf = spend["by_day_counterfactual"][d].get(bname) if bname else None
        day_rows.append([d, f"{s['requests']:,}", _cost(s), usd(cf["comparable_usd"]) if cf else "-",
                         usd(cf["savings_usd"]) if cf else "-", _unpriced(s["unpriced_requests"])])
    out.append(("spend by day (UTC)", ["day", "requests", "cost", (f"all on {bname}" if bname else "baseline") + like,
                                       "saved", "flags"], day_rows))
    cf_rows = [["actual routing", "", "", usd(spend["cost_usd"]), "", "", "", ""]]
    for t, cf in spend["counterfactual"].items():
        info = report["tiers"][t]
        cf_rows.append([f"all on {t}" + (" (baseline)" if t == bname else ""), info["zone"], info["price_source"],
                        usd(cf["cost_usd"]), usd(cf["comparable_usd"]), usd(cf["savings_usd"]), pct(cf["savings_pct"]),
                        _basis(cf)])
    out.append(("the same traffic all on one tier", ["counterfactual", "zone", "price", "cost", "on priced records",
                                                      "actual saves", "saves %", "tokens on that tier"], cf_rows))
    if base:
        wl_rows = [[w, usd(b["actual_usd"]), usd(b["comparable_usd"]), usd(b["savings_usd"]), pct(b["savings_pct"]),
                    _basis(b)] for w, b in base["by_workload"].items()]
        out.append((f"savings against all on {bname} by workload", ["workload", "actual", f"all on {bname}{like}",
                                                                     "saved", "saved %", f"tokens on {bname}"], wl_rows))
    shadow = report["shadow"]
    if shadow["requests"]:
        sh_rows = [[w, t, f"{s['requests']:,}", _cost(s), _unpriced(s["unpriced_requests"])]
                   for w, ts in shadow["by_workload_tier"].items() for t, s in ts.items()]
        out.append(("shadow spend (candidate tiers answering in the shadows; not in the totals above)",
                    ["workload", "tier", "requests", "cost", "flags"], sh_rows))
    return out


def summary_lines(report: dict[str, Any]) -> list[str]:
    win, base, month = report["window"], report["baseline"], report["monthly"]
    lines = []
    if win["requests"]:
        days = "too short to extrapolate" if win["days"] is None else f"{win['days']:.2f} days" + (
            "" if win["monthly_factor"] is not None else ": under an hour, too short to project a month")
        lines.append(f"window: {win['requests']:,} requests from {win['first']} to {win['last']} ({days})")
    else:
        lines.append("window: no captured requests match")
    if not report["spend"]["requests"] and not report["spend"]["cascade_first"]:
        lines.append("baseline: - (nothing was spent in the window)")
    elif base:
        like = "" if base["comparable_usd"] == base["cost_usd"] else f" ({usd(base['comparable_usd'])} for the priced records)"
        lines.append(f"baseline: all on {base['tier']} ({base['why']}): {usd(base['cost_usd'])}{like}; actual "
                     f"{usd(base['actual_usd'])}; saved {usd(base['savings_usd'])} ({pct(base['savings_pct'])})")
    else:
        lines.append("baseline: none (no configured tier has a known price)")
    if month:
        text = f"a month at this rate: {month['requests']:,.0f} requests, {usd(month['cost_usd'])} spend"
        if "savings_usd" in month:
            text += f", {usd(month['savings_usd'])} saved against {usd(month['baseline_comparable_usd'])} all on {base['tier']}"
            if report["unpriced"]["requests"]:
                text += " (priced records only)"
        lines.append(text)
    if report["shadow"]["requests"]:
        text = f"shadow spend: {usd(report['shadow']['cost_usd'])} on {report['shadow']['requests']:,} shadow calls"
        net = net_savings(report)
        if net is not None:
            text += f"; saved net of it: {usd(net)}"
        lines.append(text)
    basis = basis_line(report)
    if basis:
        lines.append(basis)
    un = report["unpriced"]
    if un["requests"] or un["shadow_requests"]:
        lines.append(f"UNPRICED: {un['requests']:,} records (+{un['shadow_requests']:,} shadow) on tiers "
                     f"{', '.join(un['tiers'])} have no known cost; they are counted but not in any dollar figure, "
                     "and savings compare only priced records")
    if report["errors"]["requests"]:
        lines.append(f"errors: {report['errors']['requests']:,} failed requests (priced only where the tier had "
                     "used tokens: a stream that broke off)")
    return lines


def render_console(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    for title, header, rows in tables(report):
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i < 2 and h in ("workload", "tier", "day", "counterfactual") else "right")
        for row in rows:
            t.add_row(*row)
        console.print(t)
    for line in summary_lines(report):
        console.print(f"[bold yellow]{line}[/]" if line.startswith("UNPRICED") else line)


def chart_png(report: dict[str, Any]) -> bytes:
    """Left: spend per day stacked by tier, with the all-on-baseline counterfactual as a line. Right: per
    workload, the actual spend against the same traffic all on each priced tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    spend, base = report["spend"], report["baseline"]
    like = " (priced records)" if spend["unpriced_requests"] else ""
    days = list(spend["by_day"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    money = FuncFormatter(lambda y, _: usd(y))
    tiers = sorted(spend["by_tier"])
    bottom = [0.0] * len(days)
    for t in tiers:
        heights = [spend["by_day_tier"][d].get(t, {}).get("cost_usd") or 0.0 for d in days]
        unpriced = t in report["tiers"] and report["tiers"][t]["unknown_price"]
        ax1.bar(days, heights, bottom=bottom, label=f"on {t}" + (" (unpriced: not shown)" if unpriced else ""))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if base:
        ax1.plot(days, [spend["by_day_counterfactual"][d][base["tier"]]["comparable_usd"] or 0 for d in days],
                 color="black", marker="o", label=f"all on {base['tier']}" + like)
    ax1.set_title("spend per day (UTC)")
    ax1.yaxis.set_major_formatter(money)
    ax1.tick_params(axis="x", rotation=45)
    ax1.set_ylim(0, ax1.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax1.legend(fontsize=8, loc="upper right", ncol=2)
    ax1.grid(True, axis="y", alpha=0.3)
    workloads = list(spend["by_workload"])
    priced = [t for t, info in report["tiers"].items() if not info["unknown_price"]]
    nan = float("nan")  # an unknown cost draws no bar, not a bar of $0
    series = [("actual", [nan if spend["by_workload"][w]["cost_usd"] is None else spend["by_workload"][w]["cost_usd"]
                          for w in workloads])]
    series += [(f"all on {t}", [spend["by_workload_counterfactual"][w][t]["comparable_usd"] or 0 for w in workloads])
               for t in priced]
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        ax2.bar([x + i * width for x in range(len(workloads))], values, width=width, label=label)
    ax2.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(workloads))], workloads, rotation=20)
    ax2.set_title("actual spend against all on one tier, by workload" + like)
    ax2.yaxis.set_major_formatter(money)
    ax2.set_ylim(0, ax2.get_ylim()[1] * 1.2)
    ax2.legend(fontsize=8, loc="upper right", ncol=2)
    ax2.grid(True, axis="y", alpha=0.3)
    title = "captured spend"
    if base and base["savings_pct"] is not None:
        title += f": {pct(base['savings_pct'])} saved against all on {base['tier']}"
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def render_html(report: dict[str, Any], png: bytes) -> str:
    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    sections = "\n".join(f"<h2>{html.escape(title)}</h2>\n{table(header, rows)}" for title, header, rows in tables(report))
    lines = "".join(f"<li{' class=warn' if line.startswith('UNPRICED') else ''}>{html.escape(line)}</li>"
                    for line in summary_lines(report))
    img = base64.b64encode(png).decode("ascii")
    wl = report["filters"]["workload"]
    title = html.escape("tiergate spend report" + (f": {wl}" if wl else ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.warn {{ color: #a40; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<ul>{lines}</ul>
<img alt="spend chart" src="data:image/png;base64,{img}">
{sections}
</body></html>
"""


def write_html(report: dict[str, Any], path: str | os.PathLike[str], png: bytes | None = None) -> None:
    Path(path).write_text(render_html(report, png if png is not None else chart_png(report)), encoding="utf-8")
