"""Spend aggregation and the all-on-one-tier counterfactual, with hand-checked arithmetic."""

from __future__ import annotations

from datetime import date

import pytest

from tiergate.costs.pricing import Pricer
from tiergate.costs.report import counterfactual
from tiergate.errors import DataError

# frontier: $2 / $10 per million tokens; small: $0.0001 per request whatever the tokens
FRONTIER = Pricer(input_usd_per_token=2e-6, output_usd_per_token=10e-6)
SMALL = Pricer(per_request_usd=0.0001)

RECORDS = [
    # workload, tier, day, prompt, completion, actual cost
    {"workload": "triage", "tier": "frontier", "day": "2025-06-01", "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": 0.003},
    {"workload": "triage", "tier": "small", "day": "2025-06-01", "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": 0.0001},
    {"workload": "triage", "tier": "small", "day": date(2025, 6, 2), "prompt_tokens": 500, "completion_tokens": 50, "cost_usd": 0.0001},
    {"workload": "extract", "tier": "frontier", "day": "2025-06-02", "prompt_tokens": 2000, "completion_tokens": 200, "cost_usd": 0.006},
]


def test_spend_by_workload_tier_and_day() -> None:
    s = counterfactual(RECORDS, {"frontier": FRONTIER, "small": SMALL})
    assert s["requests"] == 4
    assert s["cost_usd"] == pytest.approx(0.003 + 0.0001 + 0.0001 + 0.006)  # 0.0092
    assert s["prompt_tokens"] == 4500 and s["completion_tokens"] == 450
    assert s["by_workload"]["triage"]["cost_usd"] == pytest.approx(0.0032)
    assert s["by_workload"]["extract"]["requests"] == 1
    assert s["by_tier"]["small"]["cost_usd"] == pytest.approx(0.0002)
    assert s["by_tier"]["frontier"]["cost_usd"] == pytest.approx(0.009)
    assert s["by_day"]["2025-06-01"]["cost_usd"] == pytest.approx(0.0031)
    assert s["by_day"]["2025-06-02"]["cost_usd"] == pytest.approx(0.0061)  # a date object keys as ISO text
    assert s["by_workload_tier"]["triage"]["small"]["requests"] == 2


def test_all_on_one_tier_counterfactual() -> None:
    s = counterfactual(RECORDS, {"frontier": FRONTIER, "small": SMALL})
    # all on frontier: 1000x2e-6+100x1e-5 = 0.003; 0.003; 500x2e-6+50x1e-5 = 0.0015; 2000x2e-6+200x1e-5 = 0.006
    all_frontier = 0.003 + 0.003 + 0.0015 + 0.006                     # 0.0135
    cf = s["counterfactual"]["frontier"]
    assert cf["cost_usd"] == pytest.approx(all_frontier)
    assert cf["savings_usd"] == pytest.approx(all_frontier - 0.0092)  # 0.0043
    assert cf["savings_pct"] == pytest.approx((all_frontier - 0.0092) / all_frontier * 100)  # 31.85%
    small = s["counterfactual"]["small"]
    assert small["cost_usd"] == pytest.approx(4 * 0.0001)
    assert small["savings_usd"] == pytest.approx(0.0004 - 0.0092)     # negative: all-small would be cheaper
    triage = s["by_workload_counterfactual"]["triage"]["frontier"]
    assert triage["cost_usd"] == pytest.approx(0.0075)
    assert triage["savings_usd"] == pytest.approx(0.0075 - 0.0032)


def test_unpriced_records_and_unknown_tiers_are_never_zero() -> None:
    records = [*RECORDS, {"workload": "triage", "tier": "mystery", "day": "2025-06-03", "prompt_tokens": 1000,
                          "completion_tokens": 100, "cost_usd": None}]
    s = counterfactual(records, {"frontier": FRONTIER, "mystery": Pricer(unknown=True, source="unknown")})
    assert s["requests"] == 5 and s["unpriced_requests"] == 1
    assert s["cost_usd"] == pytest.approx(0.0092)
    # a bucket whose records are all unpriced costs unknown (null in --json, as the table shows), not $0
    assert s["by_tier"]["mystery"]["cost_usd"] is None and s["by_day"]["2025-06-03"]["cost_usd"] is None
    assert s["by_workload_tier"]["triage"]["mystery"]["cost_usd"] is None
    assert s["by_workload"]["triage"]["cost_usd"] == pytest.approx(0.0032)  # partly priced: the priced sum
    cf = s["counterfactual"]["frontier"]
    assert cf["cost_usd"] == pytest.approx(0.0135 + 0.003)            # every request, priced on the frontier
    assert cf["savings_usd"] == pytest.approx(0.0135 - 0.0092)        # like for like: priced records only
    mystery = {k: v for k, v in s["counterfactual"]["mystery"].items() if k != "basis"}
    assert mystery == {"cost_usd": None, "comparable_usd": None, "savings_usd": None, "savings_pct": None,
                       "unknown_price": True}


def test_empty_and_bad_records() -> None:
    s = counterfactual([], {"frontier": FRONTIER})
    assert s["requests"] == 0 and s["counterfactual"]["frontier"]["savings_pct"] is None
    with pytest.raises(DataError, match="record 0: missing key 'day'"):
        counterfactual([{"workload": "w", "tier": "t", "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0}], {})
    with pytest.raises(DataError, match="record 0"):
        counterfactual([{**RECORDS[0], "prompt_tokens": "many"}], {})


def test_small_amounts_are_never_in_scientific_notation() -> None:
    """A net saving of $1.472e-05 was printed as such."""
    from tiergate.costs.spend_render import usd

    assert usd(1.472e-05) == "$0.00001472" and usd(-3.2e-07) == "-$0.00000032"
    assert usd(0.004232) == "$0.004232" and usd(0.5) == "$0.50" and usd(0.99999) == "$1.00"
    assert usd(1e-13) == "$0.00" and usd(12.345) == "$12.35" and usd(1234.5) == "$1,234" and usd(None) == "unknown"
