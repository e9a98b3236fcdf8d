"""The projected saving of moving a cluster to the small tier prices its frontier-answered requests with the
small tier's own token counts where shadow pairs measured them (a token-priced small tier shows the
difference); no model is loaded: the embedding is a fixed stand-in."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate.analyze.discover import discover
from tiergate.costs.pricing import Pricer
from tiergate.costs.report import Window
from tiergate.costs.token_basis import Pair, TokenBasis


def _embed(texts: list[str]) -> np.ndarray:
    return np.array([[1.0, 0.0] if "ticket" in t else [0.0, 1.0] for t in texts])


def _row(i: int) -> dict:
    return {"request_id": f"r{i}", "workload": "triage", "tier": "frontier", "answer": "billing",
            "messages": [{"role": "user", "content": f"ticket {i}"}], "prompt_tokens": 100, "completion_tokens": 10,
            "cost_usd": 0.001}


def test_saving_uses_the_small_tiers_measured_tokens() -> None:
    rows = [_row(i) for i in range(4)]
    small = Pricer(input_usd_per_token=1e-6, output_usd_per_token=1e-6)   # $1 per million tokens, both ways
    window = Window(0.0, 86400.0 * 29 / 30, 4)                              # four requests stand for 30 days / 4
    # r0 and r1 were shadowed on small with 300 prompt and 30 completion tokens: measured; r2 r3 by that ratio
    basis = TokenBasis.from_pairs([Pair(f"r{i}", "triage", "frontier", 100, 10, "small", 300, 30) for i in range(2)])
    result = discover(rows, embed=_embed, window=window, clusters=1, small=("small", small), basis=basis,
                      system_weight=0, answer_weight=0)
    (c,) = result.to_dict()["clusters"]
    factor = window.monthly_factor
    assert factor is not None
    assert c["small_per_month_usd"] == pytest.approx(4 * 330e-6 * factor)
    assert c["saving_per_month_usd"] == pytest.approx((0.004 - 4 * 330e-6) * factor)
    assert c["small_token_basis"] == {"answered": 0, "measured": 2, "ratio": 2, "same_tokens": 0}
    plain = discover(rows, embed=_embed, window=window, clusters=1, small=("small", small),
                     system_weight=0, answer_weight=0).to_dict()["clusters"][0]
    assert plain["small_per_month_usd"] == pytest.approx(4 * 110e-6 * factor)
    assert plain["small_token_basis"] == {"answered": 0, "measured": 0, "ratio": 0, "same_tokens": 4}
