"""Workload discovery for people: a terminal table per cluster and the suitability quadrant chart (PNG).

    render_console(result.to_dict(), Console())
    png = quadrant_png(result.to_dict())       # matplotlib (Agg) is imported here, not before
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from tiergate.costs.spend_render import usd

if TYPE_CHECKING:
    from rich.console import Console

_COLOURS = {"label": "tab:blue", "json": "tab:green", "free_text": "tab:orange", "none": "tab:grey"}


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_console(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    win = report["window"]
    days = "-" if win["days"] is None else f"{win['days']:.2f}"
    cut = report.get("cut_k")
    sil = report["silhouette"].get(str(cut)) if cut is not None else None
    feats = ", ".join(f"{k} x{v:g}" for k, v in report["features"].items() if v)
    other = next((c for c in report["clusters"] if c["other"]), None)
    console.print(f"{report['analyzed']:,} requests analysed ({report['eligible']:,} answered with messages, "
                  f"{report['without_messages']:,} without) over {days} days; features: {feats}; "
                  f"{report['k']} clusters" + (f" (tree cut at k={cut}, silhouette {sil:.3f})" if sil is not None else "")
                  + (f", {other['requests']:,} requests in small groups pooled as 'other'" if other else ""))
    t = Table(title="discovered workloads", title_justify="left")
    for col in ("id", "named", "requests", "a month", "spend/month", "output", "near-dup", "answer H",
                "specificity", "quadrant", f"saving/month on {report['small_tier'] or '-'}"):
        wide = col in ("named", "quadrant")
        t.add_column(col, justify="left" if col in ("named", "output", "quadrant") else "right", no_wrap=wide,
                     min_width=18 if wide else None)
    for c in report["clusters"]:
        named = ", ".join(w if n == c["requests"] else f"{w} {n / c['requests']:.0%}"
                          for w, n in list(c["workloads"].items())[:2])
        st = c["structure"]
        output = st["kind"] + (f" ({st['distinct_answers']})" if st["kind"] == "label" else "")
        spend = usd(c["spend_per_month_usd"]) + (f" +{c['unpriced_requests']} unpriced" if c["unpriced_requests"] else "")
        t.add_row("other" if c["other"] else str(c["id"]), named, f"{c['requests']:,}", _num(c["volume_per_month"]), spend, output,
                  f"{c['near_duplicate_share']:.0%}", f"{c['answer_entropy_bits']:.2f}",
                  _num(c["specificity"], "{:.2f}"), c["quadrant"], usd(c["saving_per_month_usd"]))
    console.print(t)
    for c in report["clusters"]:
        console.print(f"[dim]{'other' if c['other'] else c['id']}: {c['representative'][:160]!r}[/dim]")
    counts = [c.get("small_token_basis") for c in report["clusters"] if c.get("small_token_basis")]
    if counts:
        from tiergate.costs.token_basis import basis_label

        total = {k: sum(b[k] for b in counts) for k in counts[0]}
        console.print(f"tokens on {report['small_tier']} (analysed requests): {basis_label(total)}")
    th = report["thresholds"]
    console.print(f"quadrant lines: specificity {th['specificity']:g}, volume {th['volume_per_month']:,.0f} requests/month")


def quadrant_png(report: dict[str, Any]) -> bytes:
    """Specificity against monthly volume (log), one bubble per cluster sized by its monthly spend and coloured
    by its output structure, with the quadrant lines and labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    th = report["thresholds"]
    pts = [c for c in report["clusters"] if c["volume_per_month"] is not None and c["specificity"] is not None]
    fig, ax = plt.subplots(figsize=(9, 6))
    vols = [c["volume_per_month"] for c in pts] + [th["volume_per_month"]]
    lo, hi = min(vols) / 3, max(vols) * 3
    spends = [c["spend_per_month_usd"] or 0 for c in pts]
    top = max(spends) if spends and max(spends) > 0 else 1.0
    for c, spend in zip(pts, spends, strict=True):
        kind = c["structure"]["kind"]
        ax.scatter(c["volume_per_month"], c["specificity"], s=80 + 1400 * spend / top, alpha=0.6,
                   color=_COLOURS.get(kind, "tab:grey"), edgecolor="black")
        saving = c["saving_per_month_usd"]
        name = "other" if c["other"] else f"#{c['id']}"
        named, count = next(iter(c["workloads"].items()))
        what = (named if count >= 0.8 * c["requests"] and named != report.get("default_workload")
                else c["representative"][:28] + "...")
        ax.annotate(f"{name}: {what}\n{kind}" + ("" if saving is None else f", saves {usd(saving)}/mo"),
                    (c["volume_per_month"], c["specificity"]), textcoords="offset points", xytext=(8, 8), fontsize=8)
    ax.axvline(th["volume_per_month"], color="grey", linestyle="--")
    ax.axhline(th["specificity"], color="grey", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.05)
    for x, y, text, ha in ((hi, 1.02, "move first", "right"), (lo, 1.02, "move when volume grows", "left"),
                           (hi, 0.01, "route per request", "right"), (lo, 0.01, "keep on frontier", "left")):
        ax.text(x, y, text, ha=ha, va="top" if y > 0.5 else "bottom", fontsize=10, color="dimgrey", weight="bold")
    for kind, colour in _COLOURS.items():
        if any(c["structure"]["kind"] == kind for c in pts):
            ax.scatter([], [], color=colour, label=kind.replace("_", " "))
    ax.legend(title="output", fontsize=8, loc="center left")
    ax.set_xlabel("requests per month (extrapolated from the observed window)")
    ax.set_ylabel("task specificity (mean cosine similarity of requests)")
    ax.set_title("workload suitability: bubble size = monthly spend")
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
