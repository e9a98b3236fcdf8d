"""The dashboard page as a reader sees it, from stores built record by record (no gateway): what needs attention
first, the cost against the all-frontier counterfactual, the time chart's buckets and errors, empty windows, and
captured text (workload, tier, route reason, error, rollout reason, check name) that never becomes markup."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from tiergate.config import parse_config
from tiergate.gateway.dashboard import ERROR_RATE_WARN, _nice_top, bucket_for, collect, render
from tiergate.rollout.state import RolloutStore, ensure_tables, monitor_checks
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record

NOW = time.time()
CFG = parse_config({"tiers": {
    "frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1", "price": {"input_per_mtok": 10}},
    "onprem": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1", "zone": "on_prem",
               "price": {"input_per_mtok": 1}}}})
STAGES = ["shadow", "canary-10", "full"]


def _store(tmp_path: Path, rows: list[dict[str, Any]]) -> Engine:
    engine = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    ensure_tables(engine)
    insert_records(engine, [normalize_record({
        "request_id": f"r{i}", "role": "primary", "status": "ok", "http_status": 200, "prompt_tokens": 1000,
        "completion_tokens": 0, "latency_ms": 20.0, "route_reason": "default",
        "messages": [{"role": "user", "content": "x"}], **row}) for i, row in enumerate(rows)])
    return engine


def _req(at: float, workload: str, tier: str, **kw: Any) -> dict[str, Any]:
    cost = {"frontier": 0.01, "onprem": 0.001}.get(tier)
    return {"created_at": at, "workload": workload, "tier": tier, "cost_usd": cost, **kw}


class _Markup(HTMLParser):
    """Every tag and attribute name on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}


HOSTILE = {
    "workload": "<script>alert('wl')</script>",
    "tier": '"><img src=x onerror=alert(2)>',
    "route_reason": "rules:<svg onload=alert(3)>",
    "error": "</td><script>alert(4)</script> upstream said no",
}


def test_captured_text_never_becomes_markup(tmp_path: Path) -> None:
    rows = [_req(NOW - 60 * i, HOSTILE["workload"], HOSTILE["tier"], route_reason=HOSTILE["route_reason"])
            for i in range(5)]
    rows.append(_req(NOW - 30, HOSTILE["workload"], "frontier", status="error", http_status=502,
                     error=HOSTILE["error"], cost_usd=None))
    engine = _store(tmp_path, rows)
    RolloutStore(engine).start(HOSTILE["workload"], primary="frontier", candidate="<b>cand</b>", stages=STAGES,
                               actor="t", reason="<i>why</i>")
    RolloutStore(engine).force(HOSTILE["workload"], "rolled_back", reason="<iframe src=x>", actor="t")
    with engine.begin() as conn:
        conn.execute(insert(monitor_checks).values(workload=HOSTILE["workload"], kind="<u>input</u>", at=NOW - 10,
                                                   n=100, statistic=0.3, p_value=0.001, alarm=True, detail={}))
    data = collect(engine, CFG, since=NOW - 3600)
    page = render(data, refresh_s=15)
    markup = _Markup()
    markup.feed(page)
    assert markup.tags <= {"html", "head", "meta", "title", "style", "body", "header", "b", "span", "nav", "a",
                           "main", "ul", "li", "div", "section", "h2", "i", "p", "table", "thead", "tbody", "tr", "th",
                           "td", "code"}
    assert not {a for a in markup.attrs if a.startswith("on")} and "script" not in markup.tags
    for text in (*HOSTILE.values(), "<iframe src=x>", "<u>input</u>", "<b>cand</b>"):
        assert text not in page
    assert "&lt;script&gt;alert(&#x27;wl&#x27;)&lt;/script&gt;" in page  # shown, as text
    assert "&lt;iframe src=x&gt;" in page and "&lt;u&gt;input&lt;/u&gt;" in page
    assert data["by_tier"][HOSTILE["tier"]]["configured"] is False  # a tier the config lacks is named as such
    assert "this configuration does not define" in page


def test_an_empty_store_says_so_instead_of_showing_zero_savings(tmp_path: Path) -> None:
    engine = _store(tmp_path, [])
    data = collect(engine, CFG, since=NOW - 86400)
    assert data["totals"]["requests"] == 0 and data["series"] == [] and data["by_tier"] == {}
    assert data["alarms"] == [] and data["rollouts"] == {}
    page = render(data)
    assert "Nothing captured in this window" in page and "X-Tiergate-Workload" in page
    assert "$0.00" not in page  # no traffic is not a saving of $0.00
    assert '<div class="k">saved vs all-frontier</div><div class="v">-</div><div class="s">no traffic yet' in page
    assert "All clear" not in page  # nothing to be clear about
    assert "<nav>" not in page and "http-equiv" not in page  # a snapshot: no links to other windows, no reload


def test_a_rollout_with_no_traffic_in_the_window_is_still_shown(tmp_path: Path) -> None:
    engine = _store(tmp_path, [_req(NOW - 5 * 86400, "old", "frontier")])
    store = RolloutStore(engine)
    store.start("intents", primary="frontier", candidate="onprem", stages=STAGES, actor="t", reason="configured")
    store.force("intents", "rolled_back", reason="gate failed: agreement 0.53", actor="t")
    page = render(collect(engine, CFG, since=NOW - 3600))
    assert "Nothing captured in this window" in page
    assert "Rollouts" in page and "gate failed: agreement 0.53" in page
    assert page.index("rolled back, traffic is on") < page.index("Nothing captured")  # attention comes first


def test_what_needs_attention_comes_first_worst_first(tmp_path: Path) -> None:
    rows = [_req(NOW - 10 * i, "fine", "onprem") for i in range(40)]
    rows += [_req(NOW - 10 * i, "flaky", "frontier", **({"status": "error", "http_status": 502, "cost_usd": None}
                                                        if i % 4 == 0 else {})) for i in range(40)]
    rows += [_req(NOW - 10 * i, "tiny", "frontier", status="error", http_status=502, cost_usd=None) for i in range(3)]
    engine = _store(tmp_path, rows)
    page = render(collect(engine, CFG, since=NOW - 3600))
    assert "All clear" not in page
    assert "<b>flaky</b>: 25.0% of 40 requests failed" in page
    assert "<b>tiny</b>:" not in page  # 3 failures of 3 requests: too few to call a trend
    store = RolloutStore(engine)
    store.start("fine", primary="frontier", candidate="onprem", stages=STAGES, actor="t", reason="r")
    store.set_held("fine", True, reason="held by hand", actor="t")
    with engine.begin() as conn:
        conn.execute(insert(monitor_checks).values(workload="fine", kind="input", at=NOW - 10, n=100,
                                                   statistic=0.3, p_value=0.0004, alarm=True, detail={}))
    data = collect(engine, CFG, since=NOW - 3600)
    assert data["alarms"] == [{"workload": "fine", "check": "input", "at": pytest.approx(NOW - 10), "n": 100,
                               "statistic": 0.3, "p_value": 0.0004}]
    assert data["rollouts"]["fine"]["held"] and data["rollouts"]["fine"]["stages"] == STAGES
    page = render(data)
    attention = page.split('<ul class="attn">')[1].split("</ul>")[0]
    levels = [li.split('"')[1] for li in attention.split("<li class=")[1:]]
    assert levels == ["at-bad", "at-warn", "at-warn"]  # the alarm, then the held rollout and the failing workload
    assert "input (p=0.0004)" in attention and "held at shadow" in attention


def test_all_clear_when_nothing_is_wrong(tmp_path: Path) -> None:
    engine = _store(tmp_path, [_req(NOW - 10 * i, "fine", "onprem") for i in range(20)])
    page = render(collect(engine, CFG, since=NOW - 3600))
    assert "All clear" in page and f"{ERROR_RATE_WARN:.0%}" in page


def test_cost_against_the_counterfactual_and_by_tier(tmp_path: Path) -> None:
    rows = [_req(NOW - 10 * i, "w", "onprem" if i % 4 else "frontier") for i in range(40)]  # 30 on-prem, 10 not
    engine = _store(tmp_path, rows)
    data = collect(engine, CFG, since=NOW - 3600)
    t = data["totals"]
    assert t["cost_usd"] == pytest.approx(10 * 0.01 + 30 * 0.001)
    assert t["baseline_tier"] == "frontier" and t["baseline_comparable_usd"] == pytest.approx(40 * 0.01)
    assert t["savings_usd"] == pytest.approx(0.4 - 0.13)
    assert data["by_tier"]["onprem"] | {} == {"requests": 30, "errors": 0, "share": 0.75, "zone": "on_prem",
                                              "configured": True, "cost_usd": pytest.approx(0.03),
                                              "unpriced_requests": 0}
    assert list(data["by_tier"]) == ["onprem", "frontier"]  # most traffic first
    assert data["workloads"]["w"]["on_prem_share"] == 0.75
    page = render(data)
    assert "$0.27 saved" in page and "(67.5%)" in page and "all on frontier" in page
    assert "Cost against all traffic on frontier" in page
    assert "75% on-prem" in page
    assert "$1.00" in page  # per 1k requests on the on-prem tier ($0.001 each)
    # how the on-prem answers were counted in frontier tokens: no shadow pairs here, so the same tokens (an estimate)
    assert t["baseline_basis"]["same_tokens"] == 30 and t["baseline_basis"]["answered"] == 10
    assert "tokens on frontier: 10 answered there, 30 same tokens (estimate)" in page


def test_a_routing_that_costs_more_than_the_frontier_says_so(tmp_path: Path) -> None:
    engine = _store(tmp_path, [_req(NOW - 10 * i, "w", "frontier", cost_usd=0.02) for i in range(10)])
    data = collect(engine, CFG, since=NOW - 3600)
    assert data["totals"]["savings_usd"] == pytest.approx(-0.1)
    page = render(data)
    assert '<span class="bad">$0.10 more</span>' in page and '<div class="card bad">' in page


def test_no_priced_tier_means_no_counterfactual(tmp_path: Path) -> None:
    cfg = parse_config({"tiers": {"a": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1"}}})
    engine = _store(tmp_path, [_req(NOW - 10, "w", "a", cost_usd=None)])
    data = collect(engine, cfg, since=NOW - 3600)
    page = render(data)
    assert data["totals"]["baseline_tier"] is None and "No counterfactual" in page
    assert "1 request on tiers without a price" in page


def test_time_chart_buckets_and_its_errors(tmp_path: Path) -> None:
    assert [bucket_for(s) for s in (120, 3600, 10 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400, 365 * 86400)] \
        == [10, 60, 900, 3600, 3600, 21600, 86400, 604800]
    assert _nice_top(1120) == (1500, 500) and _nice_top(0) == (1, 1) and _nice_top(7) == (8, 2)
    rows = [_req(NOW - 300 * i, "w", "frontier", **({"status": "error", "http_status": 500, "cost_usd": None}
                                                     if i == 3 else {})) for i in range(24)]  # two hours
    engine = _store(tmp_path, rows)
    data = collect(engine, CFG, since=NOW - 86400)  # from the first request: a two-hour window
    assert data["bucket_s"] == 300
    assert sum(p["errors"] for p in data["series"]) == 1 == data["totals"]["errors"]
    page = render(data)
    slots = int(data["until"] // 300) - int(data["since"] // 300) + 1
    assert page.count('<div class="col"') == slots and "per 5 min" in page
    assert page.count(", 1 failed") == 2  # the bar's tooltip and the error strip's
    assert "1 failed request<" in page  # the card, in the singular
    assert 'class="errlabel"' in page
    (tmp_path / "clean").mkdir()
    clean = render(collect(_store(tmp_path / "clean", [_req(NOW - 60, "w", "frontier")]), CFG, since=NOW - 3600))
    assert 'class="errlabel"' not in clean  # no error strip when nothing failed


def test_the_live_page_links_other_windows(tmp_path: Path) -> None:
    engine = _store(tmp_path, [_req(NOW - 10, "w", "frontier")])
    data = collect(engine, CFG, since=NOW - 3600)
    live = render(data, refresh_s=15)
    assert '<a href="?since=7d">7d</a>' in live and "reloads every 15 s" in live
    assert "<nav>" not in render(data) and "<nav>" in render(data, ranges=True)


def test_many_workloads_list_the_busiest_and_count_the_rest(tmp_path: Path) -> None:
    from tiergate.gateway.dashboard import MAX_WORKLOAD_ROWS

    rows = [_req(NOW - 10, f"wl-{k:03d}", "frontier") for k in range(MAX_WORKLOAD_ROWS + 5) for _ in range(1 + k)]
    for i, row in enumerate(rows):
        row["created_at"] = NOW - i
    data = collect(_store(tmp_path, rows), CFG, since=NOW - 3600)
    assert len(data["workloads"]) == MAX_WORKLOAD_ROWS + 5
    page = render(data)
    assert f"wl-{MAX_WORKLOAD_ROWS + 4:03d}" in page and "wl-000" not in page  # the busiest shown, the quietest not
    assert "and 5 more workloads with 15 requests between them" in page  # 1 + 2 + 3 + 4 + 5


def test_a_rollout_the_config_does_not_know_is_flagged_as_such(tmp_path: Path) -> None:
    engine = _store(tmp_path, [_req(NOW - 10, "intents", "frontier")])
    RolloutStore(engine).start("intents", primary="frontier", candidate="onprem", stages=STAGES, actor="t",
                               reason="r")
    RolloutStore(engine).force("intents", "rolled_back", reason="by hand", actor="t")
    data = collect(engine, CFG, since=NOW - 3600)
    assert data["rollouts"]["intents"]["configured"] is False and data["rollouts"]["intents"]["percent"] == 0.0
    attention = render(data).split('<ul class="attn">')[1].split("</ul>")[0]
    assert "rolled back" in attention and "(not in this config)" in attention


def test_tiers_the_config_does_not_know_are_not_called_external(tmp_path: Path) -> None:
    """`tiergate dashboard --db` without the gateway's --config: the store's tiers are unknown to the page."""
    data = collect(_store(tmp_path, [_req(NOW - 10, "w", "ghost", cost_usd=0.01)]), CFG, since=NOW - 3600)
    assert data["by_tier"]["ghost"]["configured"] is False and data["by_tier"]["ghost"]["zone"] is None
    page = render(data)
    assert "zone unknown" in page and "all external" not in page
    assert "does not define: ghost" in page and "not in this config" in page  # the attention line, the legend
