"""The TCO model: the shipped scenario against the published figures, every component by hand, break-even,
sensitivity, curve, scenario errors, and the `tiergate tco` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tiergate.cli import costs as costs_cli
from tiergate.costs.pricebook import load_pricebook
from tiergate.costs.scenario import Scenario, load_scenario
from tiergate.costs.tco import Knobs, TcoModel
from tiergate.costs.tco_report import build_report, run_scenario
from tiergate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "examples" / "tco" / "document-classification.yaml"
TRIAGE = ROOT / "examples" / "tco" / "support-triage.yaml"


@pytest.fixture(scope="module")
def book():  # type: ignore[no-untyped-def]
    return load_pricebook()


@pytest.fixture(scope="module")
def doc_report() -> dict[str, Any]:
    return run_scenario(DOC)


def _scenario(**over: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "t",
        "volume": {"requests_per_month": 1_000_000},
        "tokens": {"input_per_request": 1000, "output_per_request": 100},
        "paths": {
            "frontier": {"inference": {"input_per_mtok": 1.0, "output_per_mtok": 10.0}},
            "small": {"kind": "self_hosted",
                      "infrastructure": {"monthly_usd_per_instance": 500, "instances": 2}},
        },
    }
    for key, value in over.items():
        if key == "small" or key == "frontier":
            data["paths"][key].update(value)
        else:
            data[key] = value
    return Scenario.model_validate(data)


# --- the published worked example ---------------------------------------------------------------------------

def test_shipped_scenario_lands_inside_every_published_range(doc_report: dict[str, Any]) -> None:
    frontier, small = doc_report["paths"]["frontier"], doc_report["paths"]["small"]
    assert 13_000 <= frontier["monthly_usd"] <= 15_000
    assert 500_000 <= frontier["total_usd"] <= 550_000
    assert 75_000 <= small["total_usd"] <= 80_000
    lo, hi = small["total_usd_range"]  # the $200-500 fine-tune at both ends
    assert 75_000 <= lo <= hi <= 80_000
    assert 83 <= doc_report["savings_pct"] <= 87
    assert all(83 <= s <= 87 for s in doc_report["savings_pct_range"])
    assert doc_report["horizon_months"] == 36


def test_shipped_scenario_arithmetic_follows_from_its_inputs(doc_report: dict[str, Any]) -> None:
    spec = yaml.safe_load(DOC.read_text())
    v, t = spec["volume"]["requests_per_month"], spec["tokens"]
    inf = spec["paths"]["frontier"]["inference"]
    per_request = (t["input_per_request"] * inf["input_per_mtok"] + t["output_per_request"] * inf["output_per_mtok"]) / 1e6
    small = spec["paths"]["small"]
    small_monthly = (small["infrastructure"]["instances"] * small["infrastructure"]["monthly_usd_per_instance"]
                     + small["evaluation_maintenance_monthly_usd"])
    fine_tune = sum(small["fine_tuning"]["one_time_usd"]) / 2
    paths = doc_report["paths"]
    assert paths["frontier"]["monthly_usd"] == pytest.approx(v * per_request)
    assert paths["frontier"]["total_usd"] == pytest.approx(36 * v * per_request)
    assert paths["small"]["monthly_usd"] == pytest.approx(small_monthly)
    assert paths["small"]["one_time_usd"] == pytest.approx(fine_tune)
    assert paths["small"]["total_usd"] == pytest.approx(36 * small_monthly + fine_tune)
    base, cand = paths["frontier"]["total_usd"], paths["small"]["total_usd"]
    assert doc_report["savings_pct"] == pytest.approx((base - cand) / base * 100, abs=0.01)


def test_report_shape(doc_report: dict[str, Any]) -> None:
    for key in ("paths", "savings_pct", "break_even_monthly_volume", "payback_months", "sensitivity", "curve",
                "definitions", "pricebook"):
        assert key in doc_report
    for path in doc_report["paths"].values():
        assert {"monthly_usd", "one_time_usd", "total_usd"} <= set(path)
    json.dumps(doc_report, allow_nan=False)


def test_break_even_is_where_costs_are_equal(book) -> None:  # type: ignore[no-untyped-def]
    model = TcoModel(load_scenario(DOC), book)
    be = model.break_even_volume()
    assert be is not None
    at = model.run(volume=be)
    assert at["small"].total_usd == pytest.approx(at["frontier"].total_usd, rel=1e-7)
    below, above = model.run(volume=be * 0.9), model.run(volume=be * 1.1)
    assert below["small"].total_usd > below["frontier"].total_usd
    assert above["small"].total_usd < above["frontier"].total_usd
    # linear costs: the volume where monthly costs match with one-time costs amortised over 36 months
    per_request = model.per_request_usd("frontier")
    assert be == pytest.approx((2 * 800 + 500 + 350 / 36) / per_request, rel=1e-7)


def test_break_even_with_stepped_infrastructure(book) -> None:  # type: ignore[no-untyped-def]
    model = TcoModel(load_scenario(TRIAGE), book)
    be = model.break_even_volume()
    assert be is not None and be > 0
    gap = lambda v: model.run(volume=v)["small"].total_usd - model.run(volume=v)["frontier"].total_usd  # noqa: E731
    assert gap(be) <= 1e-6
    assert gap(be * (1 - 1e-6)) > 0


def test_break_even_never_and_always(book) -> None:  # type: ignore[no-untyped-def]
    dearer = _scenario(small={"kind": "api", "infrastructure": None,
                              "inference": {"input_per_mtok": 2.0, "output_per_mtok": 20.0}})
    assert TcoModel(dearer, book).break_even_volume() is None
    cheaper = _scenario(small={"kind": "api", "infrastructure": None,
                               "inference": {"input_per_mtok": 0.5, "output_per_mtok": 5.0}})
    assert TcoModel(cheaper, book).break_even_volume() == 0.0


def test_every_component_by_hand(book) -> None:  # type: ignore[no-untyped-def]
    sc = _scenario(
        horizon_months=12,
        frontier={"prompt_maintenance": {"hours_per_month": 10, "hourly_rate_usd": 100}},
        small={
            "inference": {"input_tokens_per_request": 200, "escalate_to": "frontier", "escalation_share": 0.1},
            "infrastructure": {"hourly_usd": 1.0, "throughput_rps_per_instance": 0.2, "target_utilisation": 0.5,
                               "redundancy": 1, "min_instances": 1},
            "evaluation_maintenance_monthly_usd": 300,
            "fixed_monthly_usd": {"storage": 50},
            "data_preparation": {"labelled_examples": 1000, "price_per_example_usd": 0.5, "fixed_usd": 200},
            "fine_tuning": {"gpu_hours": 10, "gpu_hourly_usd": 2.0, "one_time_usd": 100},
            "retraining": {"every_months": 4, "new_examples": 100},
            "one_time_usd": {"integration": 1000},
        },
    )
    r = TcoModel(sc, book).run()
    front, small = r["frontier"], r["small"]
    frontier_per_request = (1000 * 1.0 + 100 * 10.0) / 1e6  # 0.002
    assert front.components["inference"] == pytest.approx(12 * 1_000_000 * frontier_per_request)
    assert front.components["prompt_maintenance"] == pytest.approx(12 * 10 * 100)
    # 10% of requests escalate and are priced on the frontier; the small path's own tokens are free
    assert small.components["inference"] == pytest.approx(12 * 100_000 * frontier_per_request)
    # served 900,000/month over 730 h = 0.3425 req/s; / (0.2 x 0.5) -> 4 instances, + 1 spare = 5
    assert small.instances == [5] * 12
    assert small.components["infrastructure"] == pytest.approx(12 * 5 * 1.0 * 730)
    assert small.components["evaluation_maintenance"] == pytest.approx(12 * 300)
    assert small.components["fixed_monthly"] == pytest.approx(12 * 50)
    fine_tune = 100 + 10 * 2.0
    assert small.components["fine_tuning"] == pytest.approx(fine_tune)
    assert small.components["data_preparation"] == pytest.approx(1000 * 0.5 + 200)
    # retrains in months 5 and 9: the fine-tune again plus 100 new examples each
    assert small.components["retraining"] == pytest.approx(2 * (fine_tune + 100 * 0.5))
    assert small.components["other_one_time"] == 1000
    assert small.one_time_usd == pytest.approx(fine_tune + 700 + 1000)
    assert small.total_usd == pytest.approx(sum(small.monthly) + small.one_time_usd)


def test_growth_compounds_monthly(book) -> None:  # type: ignore[no-untyped-def]
    sc = _scenario(horizon_months=36, volume={"requests_per_month": 1_000_000, "growth_pct_per_month": 2})
    r = TcoModel(sc, book).run()["frontier"]
    assert r.monthly[1] / r.monthly[0] == pytest.approx(1.02)
    assert r.components["inference"] == pytest.approx(1_000_000 * 0.002 * (1.02 ** 36 - 1) / 0.02)


def test_sized_fleet_grows_with_volume(book) -> None:  # type: ignore[no-untyped-def]
    sc = _scenario(volume={"requests_per_month": 1_000_000, "growth_pct_per_month": 10, "peak_to_average": 2},
                   small={"infrastructure": {"monthly_usd_per_instance": 500, "throughput_rps_per_instance": 1.0,
                                             "target_utilisation": 1.0}})
    inst = TcoModel(sc, book).run()["small"].instances
    assert inst[0] == 1  # 1M/month = 0.38 req/s, x2 peak = 0.76 < 1
    assert inst == sorted(inst) and inst[-1] > inst[0]
    month36_peak = 1_000_000 * 1.1 ** 35 / (730 * 3600) * 2
    assert inst[-1] == -(-month36_peak // 1)


def test_sensitivity_and_curve(doc_report: dict[str, Any]) -> None:
    rows = doc_report["sensitivity"]
    assert len(rows) == 7 * 2
    base = doc_report["savings_pct"]
    by = {(r["input"], r["change_pct"]): r for r in rows}
    assert by[("volume", 50)]["savings_pct"] > base > by[("volume", -50)]["savings_pct"]
    assert by[("infra_price", 50)]["savings_pct"] < base
    assert by[("baseline_token_price", 50)]["break_even_monthly_volume"] < doc_report["break_even_monthly_volume"]
    curve = doc_report["curve"]
    assert len(curve["volumes"]) == 60
    assert curve["volumes"][0] < doc_report["break_even_monthly_volume"] < curve["volumes"][-1]
    frontier = curve["total_usd"]["frontier"]
    assert frontier == sorted(frontier)


def test_payback(book) -> None:  # type: ignore[no-untyped-def]
    model = TcoModel(load_scenario(DOC), book)
    months = model.payback_months(model.run())
    assert months == pytest.approx(350 / (14_500 - 2_100))


def test_no_payback_when_the_candidate_is_dearer_every_month(book) -> None:  # type: ignore[no-untyped-def]
    """No one-time cost and a dearer month: the candidate never pays back (it reported 0 months, "~1 day")."""
    from tiergate.costs.tco_report import payback_text

    model = TcoModel(_scenario(volume={"requests_per_month": 1000}), book)   # frontier $0.002 a request: $2/month
    res = model.run()
    assert res["small"].one_time_usd == 0 and res["small"].monthly[0] > res["frontier"].monthly[0]
    assert model.payback_months(res) is None
    # cheaper from the start and never dearer: immediate, and said so
    cheap = TcoModel(_scenario(volume={"requests_per_month": 10_000_000}), book)
    assert cheap.payback_months(cheap.run()) == 0.0
    assert payback_text(0.0) == "immediate (the candidate is never dearer)"
    assert payback_text(0.001) == "0.001 months (under a day)"
    assert payback_text(0.05) == "0.05 months (~2 days)"


def test_payback_is_the_last_crossing(book) -> None:  # type: ignore[no-untyped-def]
    """Cheaper at first, then dearer as volume shrinks: paid back only if it ends the horizon ahead."""
    model = TcoModel(_scenario(volume={"requests_per_month": 2_000_000, "growth_pct_per_month": -5},
                               small={"one_time_usd": {"setup": 100}}), book)
    res = model.run()
    total_gap = res["small"].total_usd - res["frontier"].total_usd
    assert total_gap < 0 and res["small"].monthly[-1] > res["frontier"].monthly[-1]
    months = model.payback_months(res)
    assert months == pytest.approx(100 / (4000 - 1000))         # the setup, paid back in the first month


def test_knob_picks_range_ends(book) -> None:  # type: ignore[no-untyped-def]
    model = TcoModel(load_scenario(DOC), book)
    assert model.run(k=Knobs(pick="lo"))["small"].one_time_usd == 200
    assert model.run(k=Knobs(pick="hi"))["small"].one_time_usd == 500


def test_price_book_supplies_missing_prices(book) -> None:  # type: ignore[no-untyped-def]
    model = TcoModel(load_scenario(TRIAGE), book)
    gpt41 = book.model("gpt-4.1")
    assert model.prices["frontier"].input_per_mtok == gpt41.input_per_mtok
    assert model.prices["small"].instance_monthly_usd == pytest.approx(book.instance("l4").hourly_usd * 730)
    assert model.prices["managed"].training_per_mtok == book.model("ft:gpt-4o-mini").training_per_mtok
    report = build_report(model)
    assert set(report["savings_pct_by_path"]) == {"small", "managed"}
    # the "also:" line says what it claims: the other path's savings, and its total beside it as such
    from tiergate.costs.tco_report import also_lines

    managed = report["paths"]["managed"]["total_usd"]
    saved = report["paths"]["frontier"]["total_usd"] - managed
    assert report["savings_usd_by_path"]["managed"] == pytest.approx(saved, abs=0.02)
    assert also_lines(report) == [f"{report['paths']['managed']['label']}: "
                                  f"{report['savings_pct_by_path']['managed']:.1f}% savings, ${saved:,.0f} over 36 "
                                  f"months (36-month total ${managed:,.0f})"]


def test_savings_share_is_undefined_when_the_baseline_costs_nothing(book) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from tiergate.costs.tco_report import render_console

    report = build_report(TcoModel(_scenario(tokens={"input_per_request": 0, "output_per_request": 0}), book))
    assert report["paths"]["frontier"]["total_usd"] == 0
    assert report["savings_pct"] is None and report["savings_pct_by_path"] == {"small": None}
    assert all(row["savings_pct"] is None for row in report["sensitivity"])
    json.dumps(report, allow_nan=False)
    console = Console(record=True, width=200)
    render_console(report, console)
    text = console.export_text()
    assert "savings: n/a (the baseline costs nothing: no percentage)" in text and "0.0%" not in text


# --- bad scenarios -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["paths"]["small"]["infrastructure"].update(instances=0), "paths.small.infrastructure.instances"),
        (lambda d: d["paths"]["small"].update(gpu="a10g"), "paths.small.gpu: unknown key"),
        (lambda d: d["volume"].pop("requests_per_month"), "volume.requests_per_month: Field required"),
        (lambda d: d.update(baseline="gpt"), "baseline: unknown path 'gpt'"),
        (lambda d: d["paths"]["small"]["infrastructure"].update(throughput_rps_per_instance=3),
         "paths.small.infrastructure: give instances (a fixed fleet) or throughput_rps_per_instance"),
        (lambda d: d["paths"]["small"]["fine_tuning"].update(one_time_usd=[500, 200]), "paths.small.fine_tuning.one_time_usd"),
        (lambda d: d["paths"]["frontier"]["inference"].update(model="gpt-9", input_per_mtok=None),
         "paths.frontier.inference.model: 'gpt-9' is not in the price book"),
        (lambda d: d["paths"]["small"]["infrastructure"].update(instance="tpu-v9", monthly_usd_per_instance=None),
         "paths.small.infrastructure.instance: unknown instance 'tpu-v9'"),
        # .inf and .nan are no amounts: they made the report say "$nan" and write NaN into the JSON
        (lambda d: d["volume"].update(requests_per_month=float("inf")), "volume.requests_per_month: Input should be a finite number"),
        (lambda d: d["paths"]["frontier"]["inference"].update(output_per_mtok=float("nan")),
         "paths.frontier.inference.output_per_mtok: Input should be a finite number"),
        (lambda d: d["paths"]["small"]["fine_tuning"].update(one_time_usd=[200, float("inf")]),
         "paths.small.fine_tuning.one_time_usd"),
        # numbers past any real workload: refused, not a 300-digit figure or an overflow to inf
        (lambda d: d["volume"].update(requests_per_month=1e300), "volume.requests_per_month: Input should be less than"),
        (lambda d: d["tokens"].update(input_per_request=1e308), "tokens.input_per_request: Input should be less than"),
        (lambda d: d["paths"]["frontier"]["inference"].update(input_per_mtok=1e306),
         "paths.frontier: its costs overflow (not a finite number of dollars)"),
        (lambda d: d["sensitivity"].update(changes_pct=[1e300]), "changes_pct: each change must be above -100 and at most"),
    ],
)
def test_bad_scenario_error_names_the_key(tmp_path: Path, edit: Any, message: str) -> None:
    data = yaml.safe_load(DOC.read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        run_scenario(path)
    assert message in err.value.message


def test_missing_or_unparsable_scenario(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scenario file not found"):
        load_scenario(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_scenario(bad)


# --- the command -------------------------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()
    costs_cli.register(app)
    return app


def test_tco_command_writes_json_html_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), ["tco", "--scenario", str(DOC), "--json", str(out / "r.json"),
                                         "--html", str(out / "r.html"), "--chart", str(out / "c.png")])
    assert result.exit_code == 0, result.output
    assert "savings" in result.output and "break-even" in result.output and "GPT-4o API" in result.output
    report = json.loads((out / "r.json").read_text())
    assert 83 <= report["savings_pct"] <= 87
    assert (out / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "r.html").read_text()
    assert "data:image/png;base64," in page and "Sensitivity" in page and "<script" not in page


def test_tco_command_writes_the_chart_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), ["tco", "--scenario", str(DOC)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "document-classification-tco.png").stat().st_size > 10_000
    assert "wrote chart: document-classification-tco.png" in result.output


def test_cli_bad_scenario_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(DOC.read_text())
    data["tokens"]["input_per_request"] = "many"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    from tiergate.cli import main

    monkeypatch.setattr(sys, "argv", ["tiergate", "tco", "--scenario", str(bad), "--no-chart"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "tokens.input_per_request" in err and "\n" not in err


def test_scenario_price_book_override_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text("models:\n  gpt-4.1: {input_per_mtok: 1.00}\n")
    data = yaml.safe_load(TRIAGE.read_text())
    data["pricebook"] = "prices.yaml"
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(data))
    report = run_scenario(path)
    prices = report["paths"]["frontier"]["prices"]
    assert (prices["input_per_mtok"], prices["output_per_mtok"]) == (1.00, 8.00)  # output from the shipped book
    assert report["pricebook"]["source"].endswith("prices.yaml")
    assert report["savings_pct"] < run_scenario(TRIAGE)["savings_pct"]
