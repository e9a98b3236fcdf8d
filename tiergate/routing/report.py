"""A self-contained HTML report of a router evaluation: the curves (router, random, oracle) as inline SVG
and the measures beside each other."""

from __future__ import annotations

import html
import io
from typing import Any

_MEASURES = [("aiq", "AIQ"), ("apgr", "APGR"), ("cpt_50", "CPT(50%)"), ("cpt_80", "CPT(80%)")]


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def curves_svg(report: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tiergate.routing.calibration import upper_hull

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"router": ("C0", "-"), "random": ("0.5", "--"), "oracle": ("C2", ":")}
    for name, points in report["curves"].items():
        color, ls = styles.get(name, ("C3", "-"))
        x = [p["large_share"] for p in points]
        y = [p["quality"] for p in points]
        axes[0].plot(x, y, ls, color=color, label=name)
        c = np.array([p["cost"] for p in points])
        hx, hy = upper_hull(c, np.array(y))
        axes[1].plot(c, y, ls, color=color, alpha=0.35)
        axes[1].plot(hx, hy, ls, color=color, label=f"{name} hull")
    op = report.get("operating_point")
    if op:
        axes[0].plot([op["large_share"]], [op["quality"]], "o", color="C3", label="threshold")
        if "cost" in op:
            axes[1].plot([op["cost"]], [op["quality"]], "o", color="C3")
    axes[0].set_xlabel("share of requests sent to the large tier")
    axes[1].set_xlabel("mean cost per request" if report.get("axis") == "cost" else "cost (large share)")
    for ax in axes:
        ax.set_ylabel("mean quality")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def router_html(report: dict[str, Any], title: str = "Router evaluation") -> str:
    rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{_fmt(report[name].get(key))}</td>" for key, _ in _MEASURES) + "</tr>"
        for name in ("router", "random", "oracle"))
    head = "".join(f"<th>{label}</th>" for _, label in _MEASURES)
    op = report.get("operating_point") or {}
    op_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in op.items())
    facts = {"prompts": report.get("n"), "small tier": report.get("small"), "large tier": report.get("large"),
             "all-small quality": report["all_small"]["quality"], "all-large quality": report["all_large"]["quality"],
             "oracle best quality": report["oracle_best"]["quality"], "AIQ axis": report.get("axis")}
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f4f4f4}}</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{fact_rows}</table>
<h2>Measures (same prompts)</h2><table><tr><th></th>{head}</tr>{rows}</table>
<p>AIQ: area under the non-decreasing convex hull of the cost-quality curve over the all-small to all-large cost
range, divided by that range (RouterBench). APGR: mean share of the small-large quality gap recovered over
large-tier shares 0-100%; CPT(x): the large-tier share needed to recover x of the gap (RouteLLM). Random: the
expected curve of a router escalating at random; oracle: escalates first where the large tier gains most.</p>
<h2>Operating point</h2><table>{op_rows}</table>
<h2>Curves</h2>{curves_svg(report)}
</body></html>
"""
