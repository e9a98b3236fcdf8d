"""The advisor: every branch of the decision flow, payback by hand, rule-of-thumb checks, profiles from
traffic, profile errors, the shipped example profiles and the `tiergate advise` command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tiergate.cli import costs as costs_cli
from tiergate.costs.advisor import FINE_TUNE, FRONTIER, MANAGED, OPEN_WEIGHT, advise, advise_file
from tiergate.costs.pricebook import load_pricebook
from tiergate.costs.profile import DAYS_PER_MONTH, Profile, load_profile, profile_from_traffic
from tiergate.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "advise").glob("*.yaml"))

Q_VOL, Q_DATA, Q_CREATE, Q_ML, Q_COMPLEX, Q_PRIV = (
    "volume over 500,000/month?", "training data?", "data creatable within budget?", "ML capacity?",
    "complex reasoning?", "privacy constraints?")


@pytest.fixture(scope="module")
def book():  # type: ignore[no-untyped-def]
    return load_pricebook()


def _profile(**over: Any) -> Profile:
    data: dict[str, Any] = {
        "workload": "w",
        "volume": {"requests_per_month": 2_000_000, "frontier_model": "gpt-4o",
                   "input_tokens_per_request": 500, "output_tokens_per_request": 20},
        "task_structure": "classification",
        "training_data": {"labelled_examples": 5000},
        "privacy": "none",
        "ml_capacity": "some",
        "task_stability": "stable",
    }
    data.update(over)
    return Profile.model_validate(data)


LOW = {"volume": {"requests_per_month": 100_000}}
NO_DATA = {"training_data": {"labelled_examples": 100}}
NO_BUDGET = {"training_data": {"labelled_examples": 100, "annotation_price_per_example_usd": 1.0, "data_budget_usd": 500}}
BUDGET = {"training_data": {"labelled_examples": 100, "annotation_price_per_example_usd": 1.0, "data_budget_usd": 5000}}

# (case, profile changes, recommendation, questions asked with answers)
BRANCHES = [
    ("low volume", LOW, FRONTIER, [(Q_VOL, False), (Q_PRIV, False)]),
    ("low volume, restricted data", {**LOW, "privacy": "restricted"}, OPEN_WEIGHT, [(Q_VOL, False), (Q_PRIV, True)]),
    ("no data, over budget", NO_BUDGET, FRONTIER, [(Q_VOL, True), (Q_DATA, False), (Q_CREATE, False), (Q_PRIV, False)]),
    ("no data, no price, restricted", {**NO_DATA, "privacy": "restricted"}, OPEN_WEIGHT,
     [(Q_VOL, True), (Q_DATA, False), (Q_CREATE, False), (Q_PRIV, True)]),
    ("data creatable", BUDGET, FINE_TUNE,
     [(Q_VOL, True), (Q_DATA, False), (Q_CREATE, True), (Q_ML, True), (Q_COMPLEX, False)]),
    ("data and ML capacity", {}, FINE_TUNE, [(Q_VOL, True), (Q_DATA, True), (Q_ML, True), (Q_COMPLEX, False)]),
    ("complex reasoning", {"task_structure": "complex_reasoning", "training_data": {"labelled_examples": 20000}},
     FRONTIER, [(Q_VOL, True), (Q_DATA, True), (Q_ML, True), (Q_COMPLEX, True), (Q_PRIV, False)]),
    ("complex reasoning, restricted", {"task_structure": "complex_reasoning", "privacy": "restricted",
                                       "training_data": {"labelled_examples": 20000}},
     OPEN_WEIGHT, [(Q_VOL, True), (Q_DATA, True), (Q_ML, True), (Q_COMPLEX, True), (Q_PRIV, True)]),
    ("quality gap too large", {"quality_gap_pts": 12}, FRONTIER,
     [(Q_VOL, True), (Q_DATA, True), (Q_ML, True), (Q_COMPLEX, True), (Q_PRIV, False)]),
    ("no ML capacity", {"ml_capacity": "none"}, MANAGED,
     [(Q_VOL, True), (Q_DATA, True), (Q_ML, False), (Q_COMPLEX, False), (Q_PRIV, False)]),
    ("no ML capacity, restricted", {"ml_capacity": "none", "privacy": "restricted"}, OPEN_WEIGHT,
     [(Q_VOL, True), (Q_DATA, True), (Q_ML, False), (Q_COMPLEX, False), (Q_PRIV, True)]),
]


@pytest.mark.parametrize(("case", "changes", "expected", "steps"), BRANCHES, ids=[b[0] for b in BRANCHES])
def test_every_branch_of_the_flow(book, case: str, changes: dict[str, Any], expected: str,  # type: ignore[no-untyped-def]
                                  steps: list[tuple[str, bool]]) -> None:
    advice = advise(_profile(**changes), book)
    assert advice.recommendation == expected, case
    assert [(s.question, s.answer) for s in advice.steps] == steps
    assert all(s.reason for s in advice.steps)
    assert len(advice.reasons) >= len(steps)


def test_all_four_outcomes_are_reachable() -> None:
    assert {b[2] for b in BRANCHES} == {FINE_TUNE, OPEN_WEIGHT, MANAGED, FRONTIER}


def test_eight_dimensions_are_assessed(book) -> None:  # type: ignore[no-untyped-def]
    advice = advise(_profile(latency={"p95_ms_required": 300}, quality_gap_pts=2), book)
    names = [d.name for d in advice.dimensions]
    assert names == ["volume", "task structure", "training data", "latency", "privacy", "ML capacity",
                     "task stability", "quality gap"]
    by = {d.name: d for d in advice.dimensions}
    assert by["latency"].favours == "self-hosted"
    assert by["quality gap"].favours == "small model"


def test_fine_tune_payback_by_hand(book) -> None:  # type: ignore[no-untyped-def]
    p = _profile(costs={"instance_monthly_usd": 800, "instances": 2, "evaluation_maintenance_monthly_usd": 500,
                        "fine_tune_usd": 300, "setup_usd": 1000})
    advice = advise(p, book)
    pb = advice.payback
    frontier = 2_000_000 * (500 * 2.50 + 20 * 10.00) / 1e6        # 2,900 a month
    monthly = 2 * 800 + 500 + 300 / 6                               # stable task: a retrain every 6 months
    assert pb.frontier_monthly_usd == pytest.approx(frontier)
    assert pb.option_monthly_usd == pytest.approx(monthly)
    assert pb.one_time_usd == pytest.approx(300 + 1000)
    assert pb.months == pytest.approx(1300 / (frontier - monthly))
    assert not pb.hypothetical


def test_managed_payback_by_hand(book) -> None:  # type: ignore[no-untyped-def]
    p = _profile(ml_capacity="none", task_stability="evolving", **BUDGET)
    advice = advise(p, book)
    assert advice.recommendation == MANAGED
    ft = book.model("ft:gpt-4o-mini")
    train = 1000 * (500 + 20) * 3 * ft.training_per_mtok / 1e6    # 1,000 examples needed for classification
    data = (1000 - 100) * 1.0
    monthly = 500 + 2_000_000 * (500 * ft.input_per_mtok + 20 * ft.output_per_mtok) / 1e6 + train / 3
    pb = advice.payback
    assert pb.one_time_usd == pytest.approx(train + data)
    assert pb.option_monthly_usd == pytest.approx(monthly)
    assert pb.months == pytest.approx((train + data) / (2900 - monthly))


def test_frontier_outcome_reports_a_hypothetical_payback(book) -> None:  # type: ignore[no-untyped-def]
    advice = advise(_profile(**LOW), book)
    assert advice.payback.hypothetical and advice.payback.option == FINE_TUNE
    assert advice.payback.months is None  # 100K requests of gpt-4o = $145/month: self-hosting never pays


def test_rule_of_thumb_checks(book) -> None:  # type: ignore[no-untyped-def]
    checks = {c.rule: c for c in advise(_profile(volume={"requests_per_day": 9000, "frontier_monthly_spend_usd": 2500}), book).checks}
    assert checks["single workload frontier spend a month"].passed is False       # 2,500 < 3,000
    assert checks["frontier spend a month (self-hosting)"].passed is True          # 2,500 > 500
    assert checks["conversations a day (self-hosting)"].value == pytest.approx(9000)
    assert checks["conversations a day (self-hosting)"].passed is True             # 9,000 > 8,000
    assert checks["volume over the decision threshold"].value == pytest.approx(9000 * DAYS_PER_MONTH)
    low = {c.rule: c for c in advise(_profile(volume={"requests_per_day": 7000, "frontier_monthly_spend_usd": 3100}), book).checks}
    assert low["conversations a day (self-hosting)"].passed is False
    assert low["single workload frontier spend a month"].passed is True


def test_unknown_frontier_model_is_a_warning_not_zero(book) -> None:  # type: ignore[no-untyped-def]
    advice = advise(_profile(volume={"requests_per_month": 2_000_000, "frontier_model": "house-llm"}), book)
    assert any("house-llm" in w for w in advice.warnings)
    assert advice.payback.frontier_monthly_usd is None and advice.payback.months is None
    checks = {c.rule: c for c in advice.checks}
    assert checks["single workload frontier spend a month"].value is None
    # unknown is neither a pass nor a fail, and a payback that cannot be computed is unknown, not "never"
    assert checks["single workload frontier spend a month"].passed is None
    assert checks["frontier spend a month (self-hosting)"].passed is None
    assert checks["conversations a day (self-hosting)"].passed is True
    assert advice.payback.months_text == "unknown" and advise(_profile(**LOW), book).payback.months_text == "never"
    assert not any(a.startswith("volume.frontier_monthly_spend_usd") for a in advice.assumed)  # nothing estimated
    data = json.loads(json.dumps(advice.to_dict(), allow_nan=False))
    assert data["payback"]["payback"] == "unknown" and data["checks"][1]["passed"] is None


def test_unknown_frontier_price_renders_unknown_not_never_or_no(book) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from tiergate.costs.advisor import render_advice

    console = Console(record=True, width=200)
    render_advice(advise(_profile(volume={"requests_per_month": 2_000_000, "frontier_model": "gpt-99"}), book), console)
    text = console.export_text()
    assert re.search(r"payback\s+│\s+unknown", text) and "never" not in text
    assert re.search(r"single workload frontier spend a month\s+│\s+unknown\s+│\s+3,000\s+│\s+unknown", text)
    assert "estimated from model and tokens" not in text


def test_profile_from_traffic(book) -> None:  # type: ignore[no-untyped-def]
    stats = {"workload": "triage", "requests": 140_000, "days": 7, "cost_usd": 420.0, "prompt_tokens": 70_000_000,
             "completion_tokens": 2_800_000, "model": "gpt-4o-2024-08-06", "task": "classification",
             "labelled_examples": 9000, "private_share": 0.0}
    p = profile_from_traffic(stats, answers={"ml_capacity": "team", "task_stability": "stable"})
    assert p.volume.per_month == pytest.approx(140_000 / 7 * DAYS_PER_MONTH)
    assert p.volume.frontier_monthly_spend_usd == pytest.approx(420 / 7 * DAYS_PER_MONTH)
    assert p.volume.input_tokens_per_request == 500 and p.volume.output_tokens_per_request == 20
    assert p.task_structure == "classification" and p.training_data.labelled_examples == 9000
    assert advise(p, book).recommendation == FINE_TUNE
    private = profile_from_traffic({**stats, "private_share": 0.2})
    assert private.privacy == "restricted"
    assert "ml_capacity" in private.assumed()  # traffic cannot tell: listed as assumed
    with pytest.raises(DataError):
        profile_from_traffic({"requests": 0, "days": 7})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("volume: {requests_per_month: 10, requests_per_day: 1}\n", "volume: give requests_per_month or requests_per_day"),
        ("volume: {requests_per_month: 10}\nprivacy: secret\n", "privacy: Input should be 'none', 'sensitive' or 'restricted'"),
        ("volume: {requests_per_month: 10}\nml_team: yes\n", "ml_team: unknown key"),
        ("workload: x\n", "volume: Field required"),
        ("volume: {requests_per_month: .inf}\n", "volume.requests_per_month: Input should be a finite number"),
        ("volume: {requests_per_month: 10}\nquality_gap_pts: .nan\n", "quality_gap_pts: Input should be a finite number"),
        ("volume: {requests_per_month: 1e300}\n", "volume.requests_per_month: Input should be less than or equal to"),
        ("volume: {requests_per_month: 10, input_tokens_per_request: 1e308}\n",
         "volume.input_tokens_per_request: Input should be less than or equal to"),
    ],
)
def test_bad_profile_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert message in err.value.message and str(path) in err.value.message


def test_payback_without_one_time_cost_is_immediate(book) -> None:  # type: ignore[no-untyped-def]
    """It read "payback in 1 day ($0 one-time ...)"."""
    from tiergate.costs.advisor import months_text

    advice = advise(_profile(costs={"fine_tune_usd": 0}), book)
    assert advice.recommendation == FINE_TUNE and advice.payback.months == 0
    assert advice.payback.months_text == "immediate"
    assert any(r.startswith("payback immediate ($0 one-time") for r in advice.reasons)
    assert months_text(0.001) == "under a day" and months_text(0.1) == "3 days"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_profiles_give_the_advertised_outcome(path: Path) -> None:
    expected = re.search(r"^# -> (.+)$", path.read_text(), re.M)
    assert expected is not None, f"{path} should say '# -> <outcome>'"
    assert advise_file(path).recommendation == expected.group(1).strip()


def test_shipped_profiles_cover_all_outcomes() -> None:
    assert {advise_file(p).recommendation for p in EXAMPLES} == {FINE_TUNE, OPEN_WEIGHT, MANAGED, FRONTIER}


def test_advise_command(tmp_path: Path) -> None:
    app = typer.Typer()
    costs_cli.register(app)
    out = tmp_path / "advice.json"
    result = CliRunner().invoke(app, ["advise", "--profile", str(ROOT / "examples/advise/document-classification.yaml"),
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert FINE_TUNE in result.output and "rules of thumb" in result.output
    data = json.loads(out.read_text())
    assert data["recommendation"] == FINE_TUNE
    assert {"steps", "reasons", "dimensions", "payback", "checks", "assumed"} <= set(data)
