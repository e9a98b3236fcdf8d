"""The dashboard: what the gateway has been doing, on one page, from the capture store.

    data = collect(engine, config, since=time.time() - 86400)     # JSON-ready
    page = render(data, refresh_s=15)                             # self-contained HTML (inline CSS, no scripts)

Served live at `GET /dashboard` (behind the admin token; `?since=7d`) and written as a snapshot by
`tiergate dashboard --html FILE`. It shows what an operator otherwise pieces together from logs and four
commands: what needs attention (rollbacks, held rollouts, drift alarms, failing workloads, unpriced or unknown
tiers), traffic by tier over time with its errors, spend against the all-frontier counterfactual, each workload's
split between tiers with its rollout stage and drift alarms, each rollout's place on its ladder, why requests were
routed where they were, and the latest failures. Everything is a read of the store (SQL aggregates; latency
percentiles from the most recent answers), so any gateway process sharing the database shows the same page.
Everything captured (workload, tier, reason and error text) is escaped: the page runs no script at all.
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
MAX_BARS = 72
"""The time chart's bucket is the shortest of BUCKETS_S that cuts the window into at most this many bars."""
BUCKETS_S = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
ERROR_RATE_WARN = 0.05
"""A workload failing at least this share of its requests (and ERROR_MIN_REQUESTS of them) is called out."""
ERROR_MIN_REQUESTS = 10
MAX_WORKLOAD_ROWS = 40
"""The busiest workloads the page lists (the JSON has them all)."""
_ON_PREM = ["#16a34a", "#0d9488", "#65a30d", "#059669", "#4d7c0f", "#14b8a6"]
_EXTERNAL = ["#2563eb", "#9333ea", "#f59e0b", "#db2777", "#0891b2", "#7c3aed", "#ea580c"]
_UNKNOWN = "#9ca3af"


def bucket_for(span_s: float) -> int:
    """The time chart's bucket for a window of `span_s` seconds."""
    return next((b for b in BUCKETS_S if span_s / b <= MAX_BARS), BUCKETS_S[-1])


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
        bucket_s = bucket_for(until - since)
        buckets = conn.execute(
            select(func.floor(r.c.created_at / bucket_s).label("b"), r.c.tier, func.count(), func.sum(error))
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

    tiers = sorted({str(t or "-") for _, t, _, _ in buckets} | {str(t or "-") for _, t, _, _ in by_workload})
    series: dict[int, dict[str, Any]] = {}
    for b, tier, n, errs in buckets:
        point = series.setdefault(int(b), {"by_tier": {}, "errors": 0})
        point["by_tier"][str(tier or "-")] = int(n)
        point["errors"] += int(errs or 0)
    on_prem = {n for n, t in config.tiers.items() if t.zone == "on_prem"}
    workloads: dict[str, dict[str, Any]] = {}
    tier_totals: dict[str, dict[str, int]] = {}
    for wl, tier, n, errs in by_workload:
        w = workloads.setdefault(wl, {"requests": 0, "errors": 0, "by_tier": {}})
        w["requests"] += int(n)
        w["errors"] += int(errs or 0)
        w["by_tier"][str(tier or "-")] = int(n)
        tt = tier_totals.setdefault(str(tier or "-"), {"requests": 0, "errors": 0})
        tt["requests"] += int(n)
        tt["errors"] += int(errs or 0)
    for wl, w in workloads.items():
        w["latency_ms_p50"] = _quantile(lat_by.get(wl, []), 0.5)
        w["latency_ms_p95"] = _quantile(lat_by.get(wl, []), 0.95)
        w["on_prem_share"] = sum(n for t, n in w["by_tier"].items() if t in on_prem) / w["requests"]
    requests = sum(w["requests"] for w in workloads.values())
    errors = sum(w["errors"] for w in workloads.values())

    spend = spend_report(engine, config, since=since, until=until)

    for wl, w in workloads.items():
        w["cost_usd"] = spend["spend"]["by_workload"].get(wl, {}).get("cost_usd")
        base = (spend["baseline"] or {}).get("by_workload", {}).get(wl)
        w["savings_usd"] = base.get("savings_usd") if base else None
    by_tier = {}
    for tier in sorted(tier_totals, key=lambda x: -tier_totals[x]["requests"]):
        spent = spend["spend"]["by_tier"].get(tier, {})
        by_tier[tier] = {**tier_totals[tier], "share": tier_totals[tier]["requests"] / requests,
                         "zone": config.tiers[tier].zone if tier in config.tiers else None,
                         "configured": tier in config.tiers, "cost_usd": spent.get("cost_usd"),
                         "unpriced_requests": spent.get("unpriced_requests", 0)}
    from tiergate.rollout.inspect import rollout_options

    rollouts = {s.workload: {"stage": s.stage, "primary": s.primary, "candidate": s.candidate, "held": s.held,
                             "candidate_model": s.candidate_model,
                             "configured": rollout_options(config, s.workload) is not None,
                             "percent": s.percent, "stages": list(s.stages), "stage_since": s.stage_since,
                             "updated_at": s.updated_at, "reason": s.reason}
                for s in RolloutStore(engine).list()}
    monitor = monitor_status(engine, since_s=until - since)
    for wl, w in workloads.items():
        w["rollout"] = rollouts.get(wl)
        checks = monitor.get(wl, {})
        w["alarms"] = sorted(k for k, c in checks.items() if c.get("alarm"))
        w["checks"] = sorted(checks)
    alarms = [{"workload": wl, "check": kind, "at": c.get("at"), "n": c.get("n"), "statistic": c.get("statistic"),
               "p_value": c.get("p_value")}
              for wl, checks in sorted(monitor.items()) for kind, c in sorted(checks.items()) if c.get("alarm")]
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
            "baseline_basis": base.get("basis") if base else None,
            "net_savings_usd": net_savings(spend),
            "unpriced_requests": spend["unpriced"]["requests"],
        },
        "series": [{"t": b * bucket_s, **series[b]} for b in sorted(series)],
        "by_tier": by_tier,
        "workloads": dict(sorted(workloads.items(), key=lambda kv: -kv[1]["requests"])),
        "route_reasons": [{"reason": reason or "-", "requests": int(n)} for reason, n in reasons],
        "error_statuses": {str(s): int(n) for s, n in sorted(statuses, key=lambda x: x[0] or 0)},
        "rollouts": rollouts,
        "alarms": alarms,
        "recent_errors": [{"at": at, "request_id": rid, "workload": wl, "tier": tier, "http_status": st,
                           "error": (err or "")[:200]} for at, rid, wl, tier, st, err in failures],
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# -- rendering --------------------------------------------------------------------------------------------------------
# Everything captured or configured (workload, tier, route reason, check, error text, rollout reason) goes through
# _e; style attributes only ever hold numbers this module computed and colours from its palettes.
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _when(t: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime(fmt)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms" if x >= 100 else f"{x:.1f} ms"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _n(n: int, thing: str) -> str:
    """A count and its noun: 1 request, 2 requests."""
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def _pct(x: float | None) -> str:
    """A share as a whole percentage where that is exact enough (a split's labels)."""
    return "-" if x is None else f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x:.1%}"


def _span(s: float) -> str:
    """A duration for people: 45 s, 12 min, 5.5 h, 3 days."""
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 36 * 3600:
        return f"{s / 3600:.1f} h".replace(".0 h", " h")
    return f"{s / 86400:.1f} days".replace(".0 days", " days")


def _per(step: int) -> str:
    names = {10: "10 s", 60: "minute", 300: "5 min", 900: "15 min", 3600: "hour", 21600: "6 h", 86400: "day",
             604800: "week"}
    return names.get(step, _span(step))


def _nice_top(peak: int) -> tuple[int, int]:
    """An axis top at or above `peak` and a round tick step that cuts it into at most 4 or 5 parts."""
    raw = max(peak, 1) / 4
    mag = 10 ** max(0, math.floor(math.log10(raw)))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return step * math.ceil(max(peak, 1) / step), step


def _tier_order(data: dict[str, Any]) -> list[str]:
    """On-prem tiers first (the bottom of each bar), then the external ones, then tiers the config lacks."""
    on_prem = set(data["on_prem_tiers"])
    by_tier = data.get("by_tier") or {}
    return sorted(data["tiers"], key=lambda t: (0 if t in on_prem else 1 if by_tier.get(t, {}).get("configured", True)
                                                else 2, t))


def _colors(data: dict[str, Any]) -> dict[str, str]:
    """On-prem tiers in greens, external ones in blues, purples and ambers, unknown tiers grey."""
    on_prem = set(data["on_prem_tiers"])
    known = {t for t, d in data.get("by_tier", {}).items() if d.get("configured")} | on_prem
    out: dict[str, str] = {}
    i = j = 0
    for t in _tier_order(data):
        if t in on_prem:
            out[t], i = _ON_PREM[i % len(_ON_PREM)], i + 1
        elif t in known or "by_tier" not in data:
            out[t], j = _EXTERNAL[j % len(_EXTERNAL)], j + 1
        else:
            out[t] = _UNKNOWN
    return out


def _chart(data: dict[str, Any], colors: dict[str, str]) -> str:
    """Stacked bars of requests per bucket by tier, with a strip of the errors under them (HTML and CSS)."""
    series = data["series"]
    if not series:
        return '<p class="muted">No requests in this window.</p>'
    step = int(data["bucket_s"])
    first, last = int(data["since"] // step), int(data["until"] // step)
    slots = list(range(first, last + 1))
    counts = {int(p["t"] // step): p for p in series}
    peak = max(sum(p["by_tier"].values()) for p in series)
    top, tick = _nice_top(peak)
    order = _tier_order(data)
    multi_day = data["until"] - data["since"] > 86400
    fmt = ("%H:%M:%S" if step < 60 else "%b %d %H:%M" if step < 86400 and multi_day else "%H:%M" if step < 86400
           else "%b %d" if data["until"] - data["since"] < 300 * 86400 else "%Y-%m-%d")
    cols, errs = [], []
    for slot in slots:
        p = counts.get(slot, {"by_tier": {}, "errors": 0})
        n = sum(p["by_tier"].values())
        parts = [f"{tier} {p['by_tier'][tier]:,}" for tier in order if p["by_tier"].get(tier)]
        tip = (f"{_when(slot * step)} UTC, per {_per(step)}: {_n(n, 'request')}"
               + (f" ({', '.join(parts)})" if parts else "") + (f", {p['errors']:,} failed" if p.get("errors") else ""))
        segs = "".join(f'<i style="height:{100 * p["by_tier"][tier] / top:.2f}%;background:{colors.get(tier, _UNKNOWN)}">'
                       f'</i>' for tier in order if p["by_tier"].get(tier))
        cols.append(f'<div class="col" title="{_e(tip)}">{segs}</div>')
        rate = p.get("errors", 0) / n if n else 0
        errs.append(f'<div title="{_e(tip)}" style="opacity:{min(1.0, 0.25 + 3 * rate):.2f}"></div>' if rate else "<div></div>")
    ticks = "".join(f'<span style="bottom:{100 * v / top:.2f}%">{v:,}</span>' for v in range(0, top + 1, tick))
    grid = "".join(f'<b style="bottom:{100 * v / top:.2f}%"></b>' for v in range(tick, top + 1, tick))
    every = max(1, math.ceil(len(slots) / 7))
    labels = "".join(f'<span style="left:{100 * (i + 0.5) / len(slots):.2f}%">{_e(_when(slots[i] * step, fmt))}</span>'
                     for i in range(0, len(slots), every))
    strip = (f'<div class="errs" style="grid-template-columns:repeat({len(slots)},1fr)">{"".join(errs)}</div>'
             '<div class="errlabel">failed</div>') if any(p.get("errors") for p in series) else ""
    return (f'<div class="chart" role="img" aria-label="requests per {_e(_per(step))} by tier">'
            f'<div class="yaxis">{ticks}</div><div class="plot">{grid}'
            f'<div class="cols" style="grid-template-columns:repeat({len(slots)},1fr)">{"".join(cols)}</div></div>'
            f'{strip}<div class="xaxis">{labels}</div></div>')


def _legend(data: dict[str, Any], colors: dict[str, str]) -> str:
    by_tier = data.get("by_tier") or {}
    on_prem = set(data["on_prem_tiers"])
    out = []
    for tier in _tier_order(data):
        d = by_tier.get(tier, {})
        zone = ("on-prem" if tier in on_prem else (d.get("zone") or "external") if d.get("configured", True)
                else "no tier: failed before routing" if tier == "-" else "not in this config")
        share = f" {_pct(d['share'])}" if "share" in d else ""
        out.append(f'<span class="lg"><span class="dot" style="background:{colors.get(tier, _UNKNOWN)}"></span>'
                   f'{_e(tier)}<span class="muted"> · {_e(zone.replace("_", "-"))}{share}</span></span>')
    return "".join(out)


def _split(by_tier: dict[str, int], colors: dict[str, str], order: list[str], on_prem: float | None,
           unknown: set[str]) -> str:
    total = sum(by_tier.values()) or 1
    ranked = sorted(by_tier, key=lambda t: order.index(t) if t in order else len(order))
    parts = "".join(f'<span style="width:{100 * by_tier[t] / total:.2f}%;background:{colors.get(t, _UNKNOWN)}" '
                    f'title="{_e(t)}: {by_tier[t]:,} ({by_tier[t] / total:.1%})"></span>' for t in ranked if by_tier[t])
    note = ("" if on_prem is None else "zone unknown" if set(by_tier) <= unknown else "all on-prem" if on_prem == 1
            else "all external" if on_prem == 0 and not set(by_tier) & unknown else f"{_pct(on_prem)} on-prem")
    return f'<div class="split">{parts}</div><div class="sub">{note}</div>'


def _clamp(text: Any, cls: str = "wl") -> str:
    """Captured text that may be long: at most two lines on the page, all of it on hover."""
    return f'<div class="{cls}" title="{_e(text)}">{_e(text)}</div>'


def _pill(text: str, kind: str = "") -> str:
    return f'<span class="pill {kind}">{_e(text)}</span>'


def _stage_pill(ro: dict[str, Any] | None) -> str:
    if not ro:
        return '<span class="muted">-</span>'
    stage = str(ro["stage"])
    kind = "bad" if stage == "rolled_back" else "good" if stage == "full" else "info"
    held = _pill("held", "warn") if ro.get("held") else ""
    return f'{_pill(stage.replace("_", " "), kind)}{held}'


def _attention(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What an operator should look at first: (level, html) with level bad, warn or good."""
    items: list[tuple[str, str]] = []
    for wl, ro in sorted(data["rollouts"].items()):
        why = f' <span class="muted">{_e(ro["reason"])}</span>' if ro.get("reason") else ""
        if not ro.get("configured", True):
            why += ' <span class="muted">(not in this config)</span>'
        if ro["stage"] == "rolled_back":
            items.append(("bad", f"<b>{_e(wl)}</b>: rollout of {_e(ro['candidate'])} rolled back, traffic is on "
                                 f"{_e(ro['primary'])}.{why}"))
        elif ro.get("held"):
            items.append(("warn", f"<b>{_e(wl)}</b>: rollout held at {_e(ro['stage'])}.{why}"))
    by_wl: dict[str, list[dict[str, Any]]] = {}
    for a in data.get("alarms", []):
        by_wl.setdefault(a["workload"], []).append(a)
    for wl, found in by_wl.items():
        checks = ", ".join(_e(a["check"]) + ("" if a.get("p_value") is None else f" (p={a['p_value']:.2g})")
                           for a in found)
        items.append(("bad", f"<b>{_e(wl)}</b>: drift / quality alarm: {checks}"))
    for wl, w in data["workloads"].items():
        rate = w["errors"] / w["requests"] if w["requests"] else 0
        if w["requests"] >= ERROR_MIN_REQUESTS and rate >= ERROR_RATE_WARN:
            items.append(("warn", f"<b>{_e(wl)}</b>: {rate:.1%} of {_n(w['requests'], 'request')} failed"))
    stray = [t for t, d in data.get("by_tier", {}).items() if not d.get("configured", True) and t != "-"]
    if stray:
        items.append(("warn", f"Tiers in the traffic that this configuration does not define: "
                              f"{_e(', '.join(stray))}. Their zone and price are unknown here, so on-prem share "
                              "and savings leave them out (pass the gateway's own --config)."))
    t = data["totals"]
    if t["unpriced_requests"]:
        items.append(("warn", f"{_n(t['unpriced_requests'], 'request')} on tiers without a price: spend and "
                              "savings leave them out."))
    if not items and t["requests"]:
        items.append(("good", f"All clear: no rollback or held rollout, no drift alarm, no workload failing "
                              f"{ERROR_RATE_WARN:.0%} or more of its requests."))
    return sorted(items, key=lambda x: ("bad", "warn", "good").index(x[0]))


def _cost(data: dict[str, Any], colors: dict[str, str]) -> str:
    """Actual spend against everything on the baseline (frontier) tier, and spend by tier."""
    t = data["totals"]
    base = t["baseline_tier"]
    out = []
    if base is None or t["baseline_comparable_usd"] is None or t["cost_usd"] is None:
        out.append('<p class="muted">No counterfactual: no tier has a known price to compare against '
                   "(give the frontier tier a <code>price</code>).</p>")
    else:
        cf, live, shadow = t["baseline_comparable_usd"], t["cost_usd"], t["shadow_cost_usd"] or 0.0
        scale = max(cf, live + shadow) or 1.0
        saved = t["savings_usd"]
        head = ("-" if saved is None else
                f'<span class="{"good" if saved >= 0 else "bad"}">{_e(usd(abs(saved)))} '
                f'{"saved" if saved >= 0 else "more"}</span>'
                + (f' <span class="muted">({abs(t["savings_pct"]):.1f}%)</span>' if t["savings_pct"] is not None else ""))
        out.append(f'<div class="big">{head}</div>')
        out.append(
            f'<div class="cmp"><div class="lbl">all on {_e(base)}</div><div class="track"><span class="cf" '
            f'style="width:{100 * cf / scale:.2f}%"></span></div><div class="n">{_e(usd(cf))}</div>'
            f'<div class="lbl">actual</div><div class="track"><span class="live" style="width:{100 * live / scale:.2f}%">'
            f'</span><span class="shadow" style="width:{100 * shadow / scale:.2f}%" title="shadow calls"></span></div>'
            f'<div class="n">{_e(usd(live))}</div></div>')
        notes = []
        if shadow:
            notes.append(f"plus {usd(shadow)} of shadow calls (hatched): net "
                         f"{usd(t['net_savings_usd']) if t['net_savings_usd'] is not None else 'unknown'}")
        basis = t.get("baseline_basis") or {}
        if basis.get("label") and basis["label"] != "-":
            notes.append(f"tokens on {base}: {basis['label']}")
        if t["baseline_cost_usd"] is not None and abs(t["baseline_cost_usd"] - cf) > 1e-12:
            notes.append(f"compared on the priced requests only (all of them on {base}: {usd(t['baseline_cost_usd'])})")
        if notes:
            out.append(f'<div class="sub">{_e("; ".join(notes))}</div>')
    rows = []
    for tier, d in (data.get("by_tier") or {}).items():
        cost = d.get("cost_usd")
        per_k = "-" if cost is None or not d["requests"] else usd(1000 * cost / d["requests"])
        rows.append(f'<tr><td><span class="dot" style="background:{colors.get(tier, _UNKNOWN)}"></span>{_e(tier)}</td>'
                    f'<td class=n>{d["requests"]:,}</td><td class=n>{_pct(d["share"])}</td>'
                    f'<td class=n>{_e(usd(cost))}</td><td class=n>{_e(per_k)}</td></tr>')
    if rows:
        out.append('<table class="tight"><thead><tr><th>tier</th><th class=n>requests</th><th class=n>share</th>'
                   f'<th class=n>spend</th><th class=n>per 1k</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(out)


def _ladder(ro: dict[str, Any]) -> str:
    stages = list(ro.get("stages") or [])
    stage = ro["stage"]
    at = stages.index(stage) if stage in stages else -1
    chips = "".join(f'<span class="step {"done" if i < at else "cur" if i == at else ""}">{_e(s)}</span>'
                    for i, s in enumerate(stages))
    if stage not in stages:
        chips += f'<span class="step back">{_e(stage.replace("_", " "))}</span>'
    return f'<div class="ladder">{chips}</div>'


def _rollouts(data: dict[str, Any], now: float) -> str:
    rows = []
    for wl, ro in sorted(data["rollouts"].items(), key=lambda kv: (kv[1]["stage"] != "rolled_back", kv[0])):
        since = ro.get("stage_since")
        where = f"{_e(ro['primary'])} → {_e(ro['candidate'])}" + (
            f'<div class="sub">{_e(ro["candidate_model"])}</div>' if ro.get("candidate_model") else "")
        note = "" if ro.get("configured", True) else '<div class="sub">not in this config</div>'
        rows.append(f'<tr><td>{_clamp(wl)}{note}</td><td>{_ladder(ro)}'
                    f'{_pill("held", "warn") if ro.get("held") else ""}</td><td>{where}</td>'
                    f'<td class=n>{_e(_span(now - since)) if since else "-"}</td>'
                    f'<td>{_clamp(ro.get("reason") or "", "wl why")}</td></tr>')
    return ('<div class="scroll"><table class="wide"><thead><tr><th>workload</th><th>stage</th><th>primary → candidate</th>'
            f'<th class=n>in stage</th><th>last change</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _ranges() -> str:
    return ('<nav>' + "".join(f'<a href="?since={v}">{v}</a>' for v in ("1h", "24h", "7d", "30d", "all"))
            + "</nav>")


def render(data: dict[str, Any], *, refresh_s: int | None = None, ranges: bool | None = None) -> str:
    """The page. `ranges`: links to other windows (?since=…), which only the live page can follow; by default
    the live page is the one that reloads itself."""
    t = data["totals"]
    colors = _colors(data)
    order = _tier_order(data)
    now = data["generated_at"]
    same_day = _when(data["since"], "%Y-%m-%d") == _when(data["until"], "%Y-%m-%d")
    window = (f"{_when(data['since'])} – {_when(data['until'], '%H:%M' if same_day else '%Y-%m-%d %H:%M')} UTC "
              f"({_span(data['until'] - data['since'])})")
    empty = not t["requests"]
    saved = t["savings_usd"]
    cards = [
        ("requests", f"{t['requests']:,}", _n(t["shadow_calls"], "shadow call"), ""),
        ("on-prem share", _share(t["on_prem_share"]),
         ("on " + ", ".join(data["on_prem_tiers"])) if data["on_prem_tiers"] else "no on-prem tier configured", ""),
        ("spend", "-" if empty else usd(t["cost_usd"]),
         f"+ {usd(t['shadow_cost_usd'])} shadow calls" if t["shadow_cost_usd"] else "no shadow calls", ""),
        ("saved vs all-" + (t["baseline_tier"] or "frontier"),
         "-" if empty or saved is None else usd(saved),
         "no priced baseline tier" if not t["baseline_tier"] else "no traffic yet" if empty else
         (f"{t['savings_pct']:.1f}% less" if saved >= 0 else f"{-t['savings_pct']:.1f}% more")
         if t["savings_pct"] is not None else "", "" if empty or saved is None else "good" if saved >= 0 else "bad"),
        ("errors", _share(t["error_rate"]), _n(t["errors"], "failed request"),
         "bad" if (t["error_rate"] or 0) >= ERROR_RATE_WARN else ""),
        ("latency p50", _ms(t["latency_ms_p50"]), f"p95 {_ms(t['latency_ms_p95'])}", ""),
    ]
    card_html = "".join(f'<div class="card {c}"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
                        f'<div class="s">{_e(s)}</div></div>' for k, v, s, c in cards)
    attention = "".join(f'<li class="at-{lvl}">{text}</li>' for lvl, text in _attention(data))
    unknown = {tier for tier, d in (data.get("by_tier") or {}).items() if not d.get("configured", True)}
    wl_rows = []
    shown = dict(list(data["workloads"].items())[:MAX_WORKLOAD_ROWS])
    for name, w in shown.items():
        rate = w["errors"] / w["requests"] if w["requests"] else None
        alarms = (_pill(", ".join(w["alarms"]), "bad") if w["alarms"] else
                  _pill("ok", "good") if w["checks"] else '<span class="muted" title="not monitored">-</span>')
        p95 = f'<div class="sub">p95 {_e(_ms(w["latency_ms_p95"]))}</div>' if w["latency_ms_p95"] is not None else ""
        bad = ' class="n bad"' if rate is not None and rate >= ERROR_RATE_WARN and w["requests"] >= ERROR_MIN_REQUESTS \
            else " class=n"
        wl_rows.append(
            f'<tr><td>{_clamp(name)}</td><td class=n>{w["requests"]:,}</td>'
            f'<td>{_split(w["by_tier"], colors, order, w.get("on_prem_share"), unknown)}</td>'
            f'<td>{_stage_pill(w["rollout"])}</td><td>{alarms}</td>'
            f'<td{bad}>{_share(rate)}<div class="sub">{w["errors"]:,}</div></td>'
            f'<td class=n>{_e(_ms(w["latency_ms_p50"]))}{p95}</td><td class=n>{_e(usd(w["cost_usd"]))}</td>'
            f'<td class=n>{_e(usd(w["savings_usd"]) if w["savings_usd"] is not None else "-")}</td></tr>')
    rest = list(data["workloads"].values())[MAX_WORKLOAD_ROWS:]
    more = (f'<div class="sub">and {_n(len(rest), "more workload")} with {_n(sum(w["requests"] for w in rest), "request")}'
            " between them (every workload is in the JSON: /admin/dashboard, tiergate dashboard --json)</div>"
            if rest else "")
    total_routed = sum(x["requests"] for x in data["route_reasons"]) or 1
    reason_rows = "".join(
        f'<tr><td>{_clamp(x["reason"])}</td><td class=n>{x["requests"]:,}</td>'
        f'<td class=n>{_pct(x["requests"] / total_routed)}</td><td class="barcell"><div class=bar '
        f'style="width:{100 * x["requests"] / total_routed:.1f}%"></div></td></tr>' for x in data["route_reasons"])
    error_rows = "".join(
        f'<tr><td class=n title="{_e(x["request_id"])}">{_e(_when(x["at"], "%m-%d %H:%M"))}</td>'
        f'<td>{_clamp(x["workload"])}</td><td>{_clamp(x["tier"] or "-")}</td>'
        f'<td class=n>{_e(x["http_status"] or "-")}</td><td>{_clamp(x["error"], "wl err")}</td></tr>'
        for x in data["recent_errors"])
    statuses = " ".join(_pill(f"{s}: {n:,}", "bad") for s, n in data["error_statuses"].items())
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    live = f" · reloads every {int(refresh_s)} s" if refresh_s else ""
    nav = _ranges() if (ranges if ranges is not None else refresh_s is not None) else ""
    if empty:
        body = ('<section class="empty"><h2>Nothing captured in this window</h2><p>No request reached the gateway '
                f'between {_e(_when(data["since"]))} and {_e(_when(data["until"]))} UTC. Send traffic to '
                "<code>POST /v1/chat/completions</code> (name the workload with the <code>X-Tiergate-Workload</code> "
                "header), or look at a longer window (<code>?since=7d</code>, <code>?since=all</code>; "
                "<code>tiergate dashboard --since all</code>).</p></section>")
    else:
        body = f"""<div class="two wide">
<section><h2>Requests by tier <span class="muted">per {_e(_per(int(data['bucket_s'])))}, UTC</span></h2>
{_chart(data, colors)}<div class="legend">{_legend(data, colors)}</div></section>
<section><h2>Cost against all traffic on {_e(t["baseline_tier"] or "the frontier")}</h2>{_cost(data, colors)}</section>
</div>
<section><h2>Workloads <span class="muted">latency from each workload's latest {LATENCY_SAMPLE:,} answers at most
</span></h2><div class="scroll"><table class="wide"><thead><tr><th>workload</th><th class=n>requests</th>
<th>where it went</th><th>rollout</th><th>drift / quality</th><th class=n>errors</th><th class=n>latency</th>
<th class=n>spend</th><th class=n>saved</th></tr></thead><tbody>{''.join(wl_rows)}</tbody></table></div>{more}</section>"""
    rollouts = (f'<section><h2>Rollouts</h2>{_rollouts(data, now)}</section>' if data["rollouts"] else "")
    tail = "" if empty else f"""<div class="two">
<section><h2>Why requests went where they did</h2><table><tbody>{reason_rows}</tbody></table></section>
<section><h2>Latest failures {statuses}</h2><div class="scroll"><table class="fail"><tbody>{error_rows or
'<tr><td class=muted>No failures in this window.</td></tr>'}</tbody></table></div></section>
</div>"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>tiergate dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root {{ --bg: #f4f5f7; --panel: #fff; --ink: #1f2937; --mute: #6b7280; --line: #e5e7eb; --soft: #f3f4f6;
  --good: #15803d; --bad: #b91c1c; --warn: #b45309; --info: #1d4ed8; --cf: #cbd5e1; color-scheme: light dark; }}
@media (prefers-color-scheme: dark) {{ :root {{ --bg: #0b0f17; --panel: #151b26; --ink: #e5e7eb; --mute: #9ca3af;
  --line: #273042; --soft: #1c2432; --good: #4ade80; --bad: #f87171; --warn: #fbbf24; --info: #93c5fd;
  --cf: #475569; }} }}
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: var(--bg);
  color: var(--ink); font-size: 14px; }}
header {{ background: #111827; color: #f9fafb; padding: 12px 24px; display: flex; flex-wrap: wrap; gap: 6px 18px;
  align-items: baseline; }}
header b {{ font-size: 1.25em; }} header .w {{ color: #d1d5db; }} header .g {{ color: #9ca3af; font-size: .9em; }}
nav {{ margin-left: auto; }} nav a {{ color: #93c5fd; margin-left: 10px; text-decoration: none; }}
main {{ max-width: 1320px; margin: 0 auto; padding: 16px 24px 32px; }}
.attn {{ list-style: none; margin: 0 0 14px; padding: 0; display: grid; gap: 6px; }}
.attn li {{ background: var(--panel); border-left: 4px solid var(--mute); border-radius: 6px; padding: 8px 12px;
  overflow-wrap: anywhere; }}
.attn li.at-bad {{ border-color: var(--bad); }} .attn li.at-warn {{ border-color: var(--warn); }}
.attn li.at-good {{ border-color: var(--good); }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(165px, 1fr)); gap: 12px; }}
.card {{ background: var(--panel); border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.06);
  border-top: 3px solid transparent; min-width: 0; }}
.card.good {{ border-top-color: var(--good); }} .card.bad {{ border-top-color: var(--bad); }}
.card .k {{ color: var(--mute); font-size: .78em; text-transform: uppercase; letter-spacing: .04em; }}
.card .v {{ font-size: clamp(1.25em, 2.3vw, 1.7em); font-weight: 650; margin: 2px 0;
  font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }}
.card.good .v {{ color: var(--good); }} .card.bad .v {{ color: var(--bad); }}
.card .s {{ color: var(--mute); font-size: .85em; overflow-wrap: anywhere; }}
section {{ background: var(--panel); border-radius: 8px; padding: 12px 16px; margin-top: 14px;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); min-width: 0; }}
h2 {{ font-size: 1em; margin: 2px 0 10px; }} h2 .muted {{ font-weight: 400; font-size: .85em; }}
table {{ border-collapse: collapse; width: 100%; }}
th {{ text-align: left; color: var(--mute); font-weight: 500; font-size: .85em; border-bottom: 1px solid var(--line);
  padding: 6px; white-space: nowrap; }}
td {{ border-bottom: 1px solid var(--soft); padding: 6px; vertical-align: middle; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.wl {{ min-width: 110px; max-width: 260px; overflow-wrap: anywhere; display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; }}
table.wide {{ min-width: 820px; }} table.fail {{ min-width: 520px; }}
.sub {{ color: var(--mute); font-size: .8em; }}
.scroll {{ overflow-x: auto; }}
.split {{ display: flex; height: 12px; min-width: 140px; border-radius: 3px; overflow: hidden; background: var(--soft); }}
.barcell {{ width: 40%; }} .bar {{ height: 10px; background: #3b82f6; border-radius: 2px; min-width: 2px; }}
.dot {{ display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }}
.legend {{ margin-top: 8px; display: flex; flex-wrap: wrap; gap: 4px 16px; }}
.lg {{ white-space: nowrap; }}
.pill {{ display: inline-block; border-radius: 999px; padding: 1px 8px; font-size: .82em; margin: 1px 4px 1px 0;
  background: var(--soft); color: var(--mute); white-space: nowrap; }}
.pill.good {{ color: var(--good); }} .pill.bad {{ color: var(--bad); background: rgba(220,38,38,.12); }}
.pill.warn {{ color: var(--warn); background: rgba(245,158,11,.15); }} .pill.info {{ color: var(--info); }}
h2 .pill {{ font-weight: 400; }}
.good {{ color: var(--good); }} .bad {{ color: var(--bad); }} .muted {{ color: var(--mute); }}
.wl.err {{ color: var(--bad); max-width: none; min-width: 200px; }}
.wl.why {{ color: var(--mute); font-size: .85em; max-width: 380px; }}
.chart {{ display: grid; grid-template-columns: auto 1fr; grid-template-rows: 200px auto auto; column-gap: 6px; }}
.yaxis {{ position: relative; min-width: 34px; }}
.yaxis span {{ position: absolute; right: 0; transform: translateY(50%); font-size: 11px; color: var(--mute);
  font-variant-numeric: tabular-nums; }}
.plot {{ position: relative; border-bottom: 1px solid var(--line); }}
.plot b {{ position: absolute; left: 0; right: 0; border-top: 1px dashed var(--line); }}
.cols {{ position: absolute; inset: 0; display: grid; column-gap: 2px; align-items: end; }}
.col {{ height: 100%; display: flex; flex-direction: column-reverse; min-width: 0; }}
.col:hover {{ background: var(--soft); }} .col i {{ display: block; min-height: 1px; }}
.errs {{ grid-column: 2; display: grid; column-gap: 2px; height: 8px; margin-top: 3px; }}
.errs div[title] {{ background: #dc2626; border-radius: 1px; }}
.errlabel {{ grid-column: 1; grid-row: 2; font-size: 10px; color: var(--bad); text-align: right; align-self: center; }}
.xaxis {{ grid-column: 2; position: relative; height: 18px; }}
.xaxis span {{ position: absolute; top: 3px; transform: translateX(-50%); font-size: 11px; color: var(--mute);
  white-space: nowrap; }}
.big {{ font-size: 1.6em; font-weight: 650; margin-bottom: 8px; }}
.cmp {{ display: grid; grid-template-columns: auto 1fr auto; gap: 6px 10px; align-items: center; margin-bottom: 6px; }}
.cmp .lbl {{ color: var(--mute); font-size: .85em; white-space: nowrap; }}
.track {{ display: flex; height: 16px; background: var(--soft); border-radius: 3px; overflow: hidden; }}
.track .cf {{ background: var(--cf); }} .track .live {{ background: #16a34a; }}
.track .shadow {{ background: repeating-linear-gradient(45deg, #16a34a 0 3px, transparent 3px 6px); }}
table.tight {{ margin-top: 12px; font-size: .92em; }}
.ladder {{ display: inline-flex; flex-wrap: wrap; gap: 3px; margin-right: 6px; }}
.step {{ font-size: .8em; padding: 1px 7px; border-radius: 4px; border: 1px solid var(--line); color: var(--mute);
  white-space: nowrap; }}
.step.done {{ background: var(--soft); color: var(--ink); }}
.step.cur {{ background: #2563eb; border-color: #2563eb; color: #fff; font-weight: 600; }}
.step.back {{ background: #dc2626; border-color: #dc2626; color: #fff; font-weight: 600; }}
.two {{ display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px; margin-top: 14px; }}
.two.wide {{ grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); }}
.two section {{ margin-top: 0; }}
.empty p {{ max-width: 70ch; line-height: 1.5; }}
code {{ background: var(--soft); padding: 1px 4px; border-radius: 3px; font-size: .92em; }}
@media (max-width: 900px) {{ .two, .two.wide {{ grid-template-columns: minmax(0, 1fr); }}
  main {{ padding: 12px; }} header {{ padding: 10px 12px; }} nav {{ margin-left: 0; }} }}
</style></head><body>
<header><b>tiergate</b><span class="w">{_e(window)}</span><span class="g">generated {_e(_when(now))} UTC{live}</span>{nav}</header>
<main>
<ul class="attn">{attention}</ul>
<div class="cards">{card_html}</div>
{body}
{rollouts}
{tail}
</main></body></html>
"""
