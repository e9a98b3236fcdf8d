"""The dashboard: what the gateway has been doing, on one page, from the capture store.

    data = collect(engine, config, since=time.time() - 86400)     # JSON-ready
    page = render(data, refresh_s=15)                             # self-contained HTML (inline CSS and SVG)

Served live at `GET /dashboard` (behind the admin token; `?since=7d`) and written as a snapshot by
`tiergate dashboard --html FILE`. It shows what an operator otherwise pieces together from logs and four
commands: traffic by tier over time, errors and latency, spend against the all-frontier counterfactual, each
workload's split between tiers with its rollout stage and drift alarms, why requests were routed where they were,
and the latest failures. Everything is a read of the store (SQL aggregates; latency percentiles from the most
recent answers), so any gateway process sharing the database shows the same page.
"""

from __future__ import annotations

import html
import math
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, case, func, select

from tiergate.costs.spend_render import net_savings, usd
from tiergate.store.schema import records as r

LATENCY_SAMPLE = 20000
"""Percentiles come from at most this many of the most recent answers in the window."""
_PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#9333ea", "#0891b2", "#dc2626", "#65a30d", "#db2777"]


def collect(engine: Engine, config: Any, *, since: float, until: float | None = None) -> dict[str, Any]:
    """Every figure the page shows, for primary requests (shadow calls apart) that arrived in [since, until)."""
    from tiergate.costs.report import spend_report
    from tiergate.monitor.status import monitor_status
    from tiergate.rollout.state import RolloutStore

    until = until if until is not None else time.time()
    primary = (r.c.role == "primary", r.c.created_at >= since, r.c.created_at < until)
    error = case((r.c.status == "ok", 0), else_=1)
    with engine.connect() as conn:
        first = conn.execute(select(func.min(r.c.created_at)).where(*primary)).scalar_one()
        if since < (first if first is not None else until - 86400):  # "all": from the first request (or a day)
            since = first if first is not None else until - 86400
        bucket_s = 3600 if until - since <= 2 * 86400 else 86400
        buckets = conn.execute(
            select(func.floor(r.c.created_at / bucket_s).label("b"), r.c.tier, func.count())
            .where(*primary).group_by("b", r.c.tier)).all()
        by_workload = conn.execute(
            select(r.c.workload, r.c.tier, func.count(), func.sum(error))
            .where(*primary).group_by(r.c.workload, r.c.tier)).all()
        reasons = conn.execute(
            select(r.c.route_reason, func.count()).where(*primary).group_by(r.c.route_reason)
            .order_by(func.count().desc()).limit(12)).all()
        statuses = conn.execute(
            select(r.c.http_status, func.count()).where(*primary, r.c.status != "ok")
            .group_by(r.c.http_status)).all()
        shadows = conn.execute(select(func.count()).where(
            r.c.role == "shadow", r.c.created_at >= since, r.c.created_at < until)).scalar_one()
        answered = (*primary, r.c.status == "ok", r.c.latency_ms.is_not(None))
        every = [float(ms) for (ms,) in conn.execute(
            select(r.c.latency_ms).where(*answered).order_by(r.c.id.desc()).limit(LATENCY_SAMPLE))]
        lat_by = {wl: [float(ms) for (ms,) in conn.execute(
            select(r.c.latency_ms).where(*answered, r.c.workload == wl).order_by(r.c.id.desc()).limit(LATENCY_SAMPLE))]
            for wl in {str(w) for w, _, _, _ in by_workload}}
        failures = conn.execute(
            select(r.c.created_at, r.c.request_id, r.c.workload, r.c.tier, r.c.http_status, r.c.error)
            .where(*primary, r.c.status != "ok").order_by(r.c.id.desc()).limit(10)).all()

    tiers = sorted({str(t or "-") for _, t, _ in buckets} | {str(t or "-") for _, t, _, _ in by_workload})
    series: dict[int, dict[str, int]] = {}
    for b, tier, n in buckets:
        series.setdefault(int(b), {})[str(tier or "-")] = int(n)
    workloads: dict[str, dict[str, Any]] = {}
    for wl, tier, n, errs in by_workload:
        w = workloads.setdefault(wl, {"requests": 0, "errors": 0, "by_tier": {}})
        w["requests"] += int(n)
        w["errors"] += int(errs or 0)
        w["by_tier"][str(tier or "-")] = int(n)
    for wl, w in workloads.items():
        w["latency_ms_p50"] = _quantile(lat_by.get(wl, []), 0.5)
        w["latency_ms_p95"] = _quantile(lat_by.get(wl, []), 0.95)
    requests = sum(w["requests"] for w in workloads.values())
    errors = sum(w["errors"] for w in workloads.values())
    on_prem = {n for n, t in config.tiers.items() if t.zone == "on_prem"}

    spend = spend_report(engine, config, since=since, until=until)

    for wl, w in workloads.items():
        w["cost_usd"] = spend["spend"]["by_workload"].get(wl, {}).get("cost_usd")
        base = (spend["baseline"] or {}).get("by_workload", {}).get(wl)
        w["savings_usd"] = base.get("savings_usd") if base else None
    from tiergate.rollout.inspect import rollout_options

    rollouts = {s.workload: {"stage": s.stage, "primary": s.primary, "candidate": s.candidate, "held": s.held,
                             "candidate_model": s.candidate_model,
                             "configured": rollout_options(config, s.workload) is not None}
                for s in RolloutStore(engine).list()}
    monitor = monitor_status(engine, since_s=until - since)
    for wl, w in workloads.items():
        w["rollout"] = rollouts.get(wl)
        checks = monitor.get(wl, {})
        w["alarms"] = sorted(k for k, c in checks.items() if c.get("alarm"))
        w["checks"] = sorted(checks)
    base = spend["baseline"]
    return {
        "generated_at": until, "since": since, "until": until, "bucket_s": bucket_s, "tiers": tiers,
        "on_prem_tiers": sorted(on_prem),
        "totals": {
            "requests": requests, "errors": errors, "error_rate": errors / requests if requests else None,
            "shadow_calls": int(shadows), "on_prem_share": (sum(n for w in workloads.values()
                                                                for t, n in w["by_tier"].items() if t in on_prem)
                                                            / requests) if requests else None,
            "latency_ms_p50": _quantile(every, 0.5), "latency_ms_p95": _quantile(every, 0.95),
            "cost_usd": spend["spend"]["cost_usd"], "shadow_cost_usd": spend["shadow"]["cost_usd"],
            "baseline_tier": base["tier"] if base else None,
            "baseline_cost_usd": base["cost_usd"] if base else None,
            "baseline_comparable_usd": base["comparable_usd"] if base else None,
            "savings_usd": base["savings_usd"] if base else None,
            "savings_pct": base["savings_pct"] if base else None,
            "net_savings_usd": net_savings(spend),
            "unpriced_requests": spend["unpriced"]["requests"],
        },
        "series": [{"t": b * bucket_s, "by_tier": series[b]} for b in sorted(series)],
        "workloads": dict(sorted(workloads.items(), key=lambda kv: -kv[1]["requests"])),
        "route_reasons": [{"reason": reason or "-", "requests": int(n)} for reason, n in reasons],
        "error_statuses": {str(s): int(n) for s, n in sorted(statuses, key=lambda x: x[0] or 0)},
        "rollouts": rollouts,
        "recent_errors": [{"at": at, "request_id": rid, "workload": wl, "tier": tier, "http_status": st,
                           "error": (err or "")[:200]} for at, rid, wl, tier, st, err in failures],
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# -- rendering --------------------------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x))


def _when(t: float, with_date: bool = True) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms" if x >= 100 else f"{x:.1f} ms"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _colors(tiers: list[str]) -> dict[str, str]:
    return {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(tiers)}


def _chart(data: dict[str, Any], colors: dict[str, str]) -> str:
    """Stacked bars of requests per hour (or day) by tier, as inline SVG."""
    series = data["series"]
    if not series:
        return '<p class="muted">No requests in this window.</p>'
    step = data["bucket_s"]
    first = int(data["since"] // step)
    last = int(data["until"] // step)
    slots = list(range(first, last + 1))[-72:]
    counts = {int(p["t"] // step): p["by_tier"] for p in series}
    peak = max(sum(c.values()) for c in counts.values()) or 1
    w, h, pad = 900, 180, 28
    bw = (w - pad) / len(slots)
    bars = []
    for i, slot in enumerate(slots):
        y = h
        for tier in data["tiers"]:
            n = counts.get(slot, {}).get(tier, 0)
            if not n:
                continue
            bh = (h - 10) * n / peak
            y -= bh
            bars.append(f'<rect x="{pad + i * bw:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
                        f'fill="{colors[tier]}"><title>{_e(_when(slot * step))} {_e(tier)}: {n:,}</title></rect>')
    labels = []
    for i in range(0, len(slots), max(1, len(slots) // 8)):
        labels.append(f'<text x="{pad + i * bw:.1f}" y="{h + 14}" class="axis">'
                      f'{_e(_when(slots[i] * step, step >= 86400))}</text>')
    grid = (f'<text x="0" y="12" class="axis">{peak:,}</text><line x1="{pad}" y1="10" x2="{w}" y2="10" class="grid"/>'
            f'<line x1="{pad}" y1="{h}" x2="{w}" y2="{h}" class="grid"/>')
    return (f'<svg viewBox="0 0 {w} {h + 20}" class="chart" role="img" aria-label="requests by tier">{grid}'
            f'{"".join(bars)}{"".join(labels)}</svg>')


def _split(by_tier: dict[str, int], colors: dict[str, str]) -> str:
    total = sum(by_tier.values()) or 1
    parts = "".join(f'<span style="width:{100 * n / total:.2f}%;background:{colors.get(t, "#999")}" '
                    f'title="{_e(t)}: {n:,} ({n / total:.1%})"></span>' for t, n in sorted(by_tier.items()))
    return f'<div class="split">{parts}</div>'


def render(data: dict[str, Any], *, refresh_s: int | None = None) -> str:
    t = data["totals"]
    colors = _colors(data["tiers"])
    window = f"{_when(data['since'])} to {_when(data['until'])} UTC"
    saved = ("-" if t["savings_usd"] is None else
             f"{usd(t['savings_usd'])}" + (f" ({t['savings_pct']:.1f}%)" if t["savings_pct"] is not None else ""))
    cards = [
        ("requests", f"{t['requests']:,}", f"{t['shadow_calls']:,} shadow calls"),
        ("errors", _share(t["error_rate"]), f"{t['errors']:,} requests"),
        ("latency p50 / p95", f"{_ms(t['latency_ms_p50'])}", f"p95 {_ms(t['latency_ms_p95'])}"),
        ("on-prem share", _share(t["on_prem_share"]), ", ".join(data["on_prem_tiers"]) or "no on-prem tier"),
        ("spend", usd(t["cost_usd"]), f"+ {usd(t['shadow_cost_usd'])} shadow"
         + (f", {t['unpriced_requests']:,} unpriced" if t["unpriced_requests"] else "")),
        ("saved", saved, (f"against all on {t['baseline_tier']} ({usd(t['baseline_comparable_usd'])}"
                          + ("" if t["baseline_comparable_usd"] == t["baseline_cost_usd"] else " for the priced records")
                          + f"); net of shadow calls {usd(t['net_savings_usd'])}")
         if t["baseline_tier"] else "no priced baseline tier"),
    ]
    card_html = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
                        f'<div class="s">{_e(s)}</div></div>' for k, v, s in cards)
    legend = "".join(f'<span class="dot" style="background:{c}"></span>{_e(tier)} ' for tier, c in colors.items())
    wl_rows = []
    for name, w in data["workloads"].items():
        ro = w["rollout"]
        stage = "-" if not ro else (f"{ro['stage']}{' (held)' if ro['held'] else ''}: {ro['primary']} → "
                                    f"{ro['candidate']}{'' if ro['configured'] else ' (not in this config)'}")
        alarms = ", ".join(w["alarms"]) if w["alarms"] else ("ok" if w["checks"] else "-")
        wl_rows.append(
            f"<tr><td>{_e(name)}</td><td class=n>{w['requests']:,}</td><td>{_split(w['by_tier'], colors)}</td>"
            f"<td class=n>{_share(w['errors'] / w['requests'] if w['requests'] else None)}</td>"
            f"<td class=n>{_e(_ms(w['latency_ms_p50']))}</td><td class=n>{_e(usd(w['cost_usd']))}</td>"
            f"<td class=n>{_e(usd(w['savings_usd']) if w['savings_usd'] is not None else '-')}</td>"
            f"<td>{_e(stage)}</td><td class='{'alarm' if w['alarms'] else ''}'>{_e(alarms)}</td></tr>")
    total_routed = sum(x["requests"] for x in data["route_reasons"]) or 1
    reason_rows = "".join(
        f"<tr><td>{_e(x['reason'])}</td><td class=n>{x['requests']:,}</td>"
        f"<td><div class=bar style='width:{100 * x['requests'] / total_routed:.1f}%'></div></td></tr>"
        for x in data["route_reasons"])
    error_rows = "".join(
        f"<tr><td>{_e(_when(x['at']))}</td><td>{_e(x['workload'])}</td><td>{_e(x['tier'] or '-')}</td>"
        f"<td class=n>{_e(x['http_status'] or '-')}</td><td class=err>{_e(x['error'])}</td></tr>"
        for x in data["recent_errors"])
    statuses = ", ".join(f"{s}: {n:,}" for s, n in data["error_statuses"].items()) or "none"
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>tiergate dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, sans-serif; margin: 0; background: #f6f7f9; color: #1f2937; }}
header {{ background: #111827; color: #f9fafb; padding: 14px 28px; display: flex; justify-content: space-between; }}
header b {{ font-size: 1.2em; }} header span {{ color: #9ca3af; }}
main {{ max-width: 1200px; margin: 0 auto; padding: 18px 28px; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }}
.card {{ background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }}
.card .k {{ color: #6b7280; font-size: .8em; text-transform: uppercase; letter-spacing: .04em; }}
.card .v {{ font-size: 1.6em; font-weight: 600; margin: 2px 0; }} .card .s {{ color: #6b7280; font-size: .85em; }}
section {{ background: #fff; border-radius: 8px; padding: 12px 16px; margin-top: 14px;
          box-shadow: 0 1px 2px rgba(0,0,0,.06); }}
h2 {{ font-size: 1em; margin: 4px 0 10px; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9em; }}
th {{ text-align: left; color: #6b7280; font-weight: 500; border-bottom: 1px solid #e5e7eb; padding: 6px; }}
td {{ border-bottom: 1px solid #f3f4f6; padding: 6px; vertical-align: middle; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.split {{ display: flex; height: 12px; min-width: 160px; border-radius: 3px; overflow: hidden; background: #eee; }}
.bar {{ height: 10px; background: #2563eb; border-radius: 2px; }}
.dot {{ display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }}
.alarm, .err {{ color: #b91c1c; }} .muted {{ color: #6b7280; }}
.chart {{ width: 100%; height: auto; }} .axis {{ font-size: 10px; fill: #6b7280; }}
.grid {{ stroke: #e5e7eb; }}
.two {{ display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }} .two section {{ margin-top: 0; }}
@media (max-width: 800px) {{ .two {{ grid-template-columns: 1fr; }} }}
</style></head><body>
<header><b>tiergate</b><span>{_e(window)} · generated {_e(_when(data['generated_at']))} UTC</span></header>
<main>
<div class="cards">{card_html}</div>
<section><h2>Requests by tier</h2>{_chart(data, colors)}<div class="muted">{legend}</div></section>
<section><h2>Workloads</h2><div class="muted">latency: percentiles of each workload's latest
{LATENCY_SAMPLE:,} answers in the window at most</div><table><thead><tr><th>workload</th><th>requests</th><th>tiers</th><th>errors</th>
<th>p50</th><th>spend</th><th>saved</th><th>rollout</th><th>drift / quality</th></tr></thead>
<tbody>{''.join(wl_rows) or '<tr><td colspan=9 class=muted>No traffic captured in this window.</td></tr>'}</tbody>
</table></section>
<div class="two" style="margin-top:14px">
<section><h2>Why requests went where they did</h2><table><tbody>{reason_rows or
'<tr><td class=muted>-</td></tr>'}</tbody></table></section>
<section><h2>Latest failures</h2><div class="muted">by status: {_e(statuses)}</div><table><tbody>{error_rows or
'<tr><td class=muted>No failures in this window.</td></tr>'}</tbody></table></section>
</div>
</main></body></html>
"""
