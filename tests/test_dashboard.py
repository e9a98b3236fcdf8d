"""The dashboard: live at /dashboard behind the admin token (a browser's Basic auth, a cookie, or ?token= once),
its figures as JSON at /admin/dashboard, and `tiergate dashboard --html` writing the same page from the store.
The figures must agree with the captured records and with the spend report."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tiergate.costs.report import spend_report
from tiergate.store.records import query_records
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("dash")
    with start_stub(model="gpt-4o-mini") as stub:
        cfg = {
            "auth": {"require_key": False, "admin_token": "admin-secret"},
            "store": {"url": f"sqlite:///{tmp / 'gw.db'}", "flush_interval_ms": 1},
            "tiers": {"frontier": {"kind": "upstream", "base_url": stub.base_url, "zone": "external",
                                   "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
                                   "retry": {"max_attempts": 1}},
                      "onprem": {"kind": "upstream", "base_url": stub.base_url, "zone": "on_prem",
                                 "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
                                 "retry": {"max_attempts": 1}}},
            "routing": {"default_tier": "frontier"},
            "workloads": {"triage": {"tier": "onprem"}},
        }
        with run_gateway(cfg) as gw:
            def send(workload: str, n: int) -> None:
                for i in range(n):
                    httpx.post(gw.base_url + "/chat/completions", headers={"X-Tiergate-Workload": workload},
                               json={"model": "auto", "messages": [{"role": "user", "content": f"ticket {i}"}]})

            send("triage", 6)
            send("<b>replies</b>", 3)
            stub.control(fail={"count": 1, "status": 400})
            send("<b>replies</b>", 1)  # an upstream 400, passed through and recorded as an error
            loop = gw.gateway.writer._task.get_loop()
            asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), loop).result(10)
            yield gw, cfg, tmp


def test_page_needs_the_admin_token_and_a_browser_can_give_it(traffic: Any) -> None:
    gw, _, _ = traffic
    r = httpx.get(gw.url + "/dashboard")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(gw.url + "/dashboard", auth=("ops", "wrong")).status_code == 401
    r = httpx.get(gw.url + "/dashboard", auth=("anyone", "admin-secret"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "tiergate" in r.text and '<meta http-equiv="refresh" content="15">' in r.text
    with httpx.Client(base_url=gw.url) as browser:  # ?token= once: a cookie, and a clean address
        r = browser.get("/dashboard", params={"token": "admin-secret", "since": "7d"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard?since=7d"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert browser.get("/dashboard?since=7d").status_code == 200
    r = httpx.get(gw.url + "/dashboard", params={"token": "admin-secret", "since": "2026-11-23T00:00:00+00:00"})
    assert r.headers["location"] == "/dashboard?since=2026-11-23T00%3A00%3A00%2B00%3A00"  # still encoded
    assert httpx.get(gw.url + "/dashboard", params={"token": "wrong"}).status_code == 401
    r = httpx.get(gw.url + "/dashboard", params={"since": "yesterday"}, auth=("a", "admin-secret"))
    assert r.status_code == 400 and "yesterday" in r.text and "use a duration like 30m" in r.text
    r = httpx.get(gw.url + "/admin/dashboard", params={"since": "2999-01-01"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "since"
    assert "is in the future" in r.json()["error"]["message"]


def test_figures_agree_with_the_records_and_the_spend_report(traffic: Any) -> None:
    gw, _, _ = traffic
    r = httpx.get(gw.url + "/admin/dashboard", params={"since": "1h"}, headers=ADMIN)
    assert r.status_code == 200
    data = r.json()
    rows = query_records(gw.gateway.engine, limit=None)
    t = data["totals"]
    assert t["requests"] == len(rows) == 10 and t["errors"] == 1 and t["error_rate"] == pytest.approx(0.1)
    assert t["on_prem_share"] == pytest.approx(0.6)
    assert data["workloads"]["triage"]["by_tier"] == {"onprem": 6}
    assert data["workloads"]["<b>replies</b>"] | {} and data["workloads"]["<b>replies</b>"]["errors"] == 1
    assert data["error_statuses"] == {"400": 1} and data["recent_errors"][0]["workload"] == "<b>replies</b>"
    assert {x["reason"]: x["requests"] for x in data["route_reasons"]} == {"static": 6, "default": 4}
    report = spend_report(gw.gateway.engine, gw.gateway.config, since=time.time() - 3600)
    assert t["cost_usd"] == pytest.approx(report["spend"]["cost_usd"])
    assert t["baseline_tier"] == "frontier"
    assert t["savings_usd"] == pytest.approx(report["baseline"]["savings_usd"]) and t["savings_usd"] > 0
    assert sum(sum(p["by_tier"].values()) for p in data["series"]) == 10
    lat = sorted(row["latency_ms"] for row in rows if row["status"] == "ok")
    assert t["latency_ms_p50"] == pytest.approx(lat[len(lat) // 2 - 1 if len(lat) % 2 == 0 else len(lat) // 2])


def test_page_escapes_what_callers_named(traffic: Any) -> None:
    gw, _, _ = traffic
    page = httpx.get(gw.url + "/dashboard", auth=("a", "admin-secret")).text
    assert "&lt;b&gt;replies&lt;/b&gt;" in page and "<b>replies</b>" not in page
    assert "triage" in page and "onprem" in page


def test_cli_writes_the_same_page_from_the_store(traffic: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.cli import main

    gw, cfg, tmp = traffic
    db = cfg["store"]["url"]
    monkeypatch.setattr(sys, "argv", ["tiergate", "dashboard", "--db", db, "--html", str(tmp_path / "d.html"),
                                      "--json", str(tmp_path / "d.json"), "--since", "all"])
    main()
    out = capsys.readouterr()
    assert "10 requests in 2 workloads" in out.out
    # no -c: the embedded defaults do not know the store's tiers, and the command says so
    assert "tier(s) frontier, onprem carried traffic but are not in the embedded defaults" in out.err
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["totals"]["requests"] == 10 and "&lt;b&gt;replies" in (tmp_path / "d.html").read_text()
    monkeypatch.setattr(sys, "argv", ["tiergate", "dashboard", "--db", f"sqlite:///{tmp_path / 'typo.db'}",
                                      "--html", str(tmp_path / "x.html")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "no capture store" in capsys.readouterr().err


def test_net_savings_take_off_the_shadow_spend() -> None:
    from tiergate.costs.spend_render import net_savings

    report = {"baseline": {"savings_usd": 10.0}, "shadow": {"requests": 3, "cost_usd": 2.5}}
    assert net_savings(report) == 7.5
    assert net_savings({"baseline": {"savings_usd": 10.0}, "shadow": {"requests": 3, "cost_usd": None}}) is None
    assert net_savings({"baseline": None, "shadow": {"requests": 0, "cost_usd": None}}) is None


def test_the_same_figures_on_sqlite_and_postgresql(store_url: str) -> None:
    """The page's figures are SQL aggregates: the same on both stores (hourly buckets, errors, tier split)."""
    from tiergate.config import parse_config
    from tiergate.gateway.dashboard import collect, render
    from tiergate.store.db import open_store
    from tiergate.store.writer import insert_records, normalize_record

    now = time.time()
    engine = open_store(store_url)
    insert_records(engine, [normalize_record({
        "request_id": f"r{i}", "created_at": now - 360 * i, "workload": f"w{i % 2}", "role": "primary",
        "tier": "frontier" if i % 3 else "onprem", "status": "ok" if i % 7 else "error",
        "http_status": 200 if i % 7 else 502, "prompt_tokens": 10, "completion_tokens": 5,
        "cost_usd": 0.001 if i % 3 else 0.0001, "latency_ms": 10.0 + i, "route_reason": "default",
        "messages": [{"role": "user", "content": "x"}]}) for i in range(100)])
    cfg = parse_config({"tiers": {
        "frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1", "price": {"input_per_mtok": 1}},
        "onprem": {"kind": "upstream", "base_url": "http://127.0.0.1:9/v1", "zone": "on_prem",
                   "price": {"input_per_mtok": 0.1}}}})
    data = collect(engine, cfg, since=now - 3 * 86400)
    engine.dispose()
    t = data["totals"]
    assert (t["requests"], t["errors"], data["bucket_s"]) == (100, 15, 900)
    assert sum(sum(p["by_tier"].values()) for p in data["series"]) == 100
    assert sum(p["errors"] for p in data["series"]) == 15
    assert len(data["series"]) in (40, 41)  # 9.9 hours of traffic: 40 or 41 quarter hours, as now falls
    assert data["workloads"]["w0"]["by_tier"] == {"frontier": 33, "onprem": 17}
    assert t["on_prem_share"] == pytest.approx(34 / 100) and "w1" in render(data)


def test_live_page_without_reloading_still_links_other_windows(tmp_path: Path) -> None:
    cfg = {"auth": {"require_key": False, "admin_token": "admin-secret"},
           "server": {"dashboard_refresh_s": 0},
           "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
           "tiers": {"frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9"}}}
    with run_gateway(cfg) as gw:
        page = httpx.get(gw.url + "/dashboard", auth=("a", "admin-secret")).text
    assert 'http-equiv="refresh"' not in page and '<a href="?since=7d">7d</a>' in page


def test_page_is_not_cached_framed_or_scripted_and_its_cookie_is_secure_over_https(traffic: Any) -> None:
    gw, _, _ = traffic
    r = httpx.get(gw.url + "/dashboard", auth=("a", "admin-secret"))
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    plain = httpx.get(gw.url + "/dashboard", params={"token": "admin-secret"})
    assert "secure" not in plain.headers["set-cookie"].lower()  # plain HTTP on loopback: the browser would drop it
    behind_tls = httpx.get(gw.url + "/dashboard", params={"token": "admin-secret"},
                           headers={"X-Forwarded-Proto": "https"})
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    assert httpx.get(gw.url + "/dashboard").headers["cache-control"] == "no-store"  # the 401 page too
