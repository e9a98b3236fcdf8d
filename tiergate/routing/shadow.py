"""Outcomes from shadow pairs the gateway captured: the same request answered by a small and a large tier.

    oc = outcomes_from_shadow(engine, small="intents", large="frontier", workload="support-triage")
    write_outcomes(oc, "outcomes.jsonl")          # then: tiergate router train learned --outcomes outcomes.jsonl

A pair is a primary record and its `shadow` record (parent_request_id), both `ok`, one from each tier. With no
gold answers, the large tier's answer is the reference: it scores 1 and the small tier scores its agreement
with it (`exact`: the same answer once whitespace and case are normalised; `json`: the same JSON value; `rouge_l`
for free text). Costs are the records' own, when both are known.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from tiergate.errors import DataError
from tiergate.routing.outcomes import Outcome, Outcomes

Agreement = Literal["exact", "json", "rouge_l"]


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


def agreement(small: str | None, large: str | None, how: Agreement) -> float:
    if how == "exact":
        return 1.0 if _norm(small) == _norm(large) and large is not None else 0.0
    if how == "json":
        try:
            return 1.0 if json.loads(small or "") == json.loads(large or "") else 0.0
        except ValueError:
            return 0.0
    from tiergate.evaluate.text_metrics import rouge_l

    return float(rouge_l(large or "", small or ""))


def _prompt(messages: Any) -> str:
    from tiergate.data.dataset import input_text

    return input_text(messages) if isinstance(messages, list) else ""


def outcomes_from_shadow(engine: Any, *, small: str, large: str, workload: str | None = None,
                         how: Agreement = "exact", since: float | None = None) -> Outcomes:
    """Outcomes of every captured (primary, shadow) pair between `small` and `large`."""
    from tiergate.store.records import iter_records

    shadows = {r["parent_request_id"]: r for r in iter_records(engine, workload=workload, role="shadow", status="ok",
                                                               since=since)
               if r.get("parent_request_id") and r.get("tier") in (small, large)}
    where = engine.url.render_as_string(hide_password=True)
    rows: list[Outcome] = []
    if shadows:
        for primary in iter_records(engine, workload=workload, role="primary", status="ok", since=since):
            shadow = shadows.get(primary["request_id"])
            if shadow is None or {primary.get("tier"), shadow.get("tier")} != {small, large}:
                continue
            by_tier = {primary["tier"]: primary, shadow["tier"]: shadow}
            prompt = _prompt(primary.get("messages"))
            if not prompt.strip():
                continue  # captured without messages (capture_messages off)
            s_ans, l_ans = by_tier[small].get("answer"), by_tier[large].get("answer")
            costs = None
            if by_tier[small].get("cost_usd") is not None and by_tier[large].get("cost_usd") is not None:
                costs = {small: float(by_tier[small]["cost_usd"]), large: float(by_tier[large]["cost_usd"])}
            rows.append(Outcome(prompt, {small: agreement(s_ans, l_ans, how), large: 1.0}, costs))
    if not rows:
        raise DataError(f"no captured shadow pairs between tiers {small!r} and {large!r}"
                        + (f" in workload {workload!r}" if workload else ""), path=where)
    return Outcomes(rows, [small, large], path=where, meta={"source": "shadow", "agreement": how})
