"""Which token counts price a request on a tier that did not answer it: the counterfactual's token basis.

    basis = TokenBasis.from_pairs(load_pairs(engine, since=..., workload=...))
    prompt, completion, how = basis.tokens("req_1", "support-triage", "small", 210, 3, target="frontier")
    # how: "answered" (the request was answered on the target), "measured" (a shadow or cascade pair holds the
    # target's own counts for this request), "ratio" (the workload's measured ratio between the two tiers),
    # or "same_tokens" (no evidence: the answering tier's counts, an estimate)

A tier answers the same request with a different number of tokens: its tokenizer (and chat template) counts the
prompt differently, and its answer has its own length. Where the store holds the same request answered by two
tiers it has evidence:

- a *shadow pair*: a primary record and its `shadow` record (the rollout router sends the other tier the same
  request after the answer), both `ok`;
- a *cascade pair*: an escalated cascade's `cascade_first` record (the small tier's answer) and the request's
  primary record (the large tier's answer).

For a request with such a pair on the target tier, the pair's own counts are used ("measured"). For the rest, the
workload's ratio between the answering tier and the target, measured on its pairs, scales the counts ("ratio";
from its shadow pairs when it has any: they sample the traffic, where cascade pairs are only the escalated, hard
requests):
the prompt and the completion each by their own ratio of sums (sum of the target's tokens over the sum of the
answering tier's, over the pairs; robust to short answers); where the answering tier's side sums to zero (a
classifier reports no completion tokens) the target's mean over the pairs is used instead. Without pairs the
answering tier's own counts are used, as before, and the request is labelled "same_tokens" (an estimate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Basis = Literal["answered", "measured", "ratio", "same_tokens"]
BASES: tuple[Basis, ...] = ("answered", "measured", "ratio", "same_tokens")


@dataclass(frozen=True)
class Pair:
    """One request answered by two tiers: the primary record's tier and counts, and the paired record's."""

    request_id: str
    workload: str
    tier: str
    prompt_tokens: int
    completion_tokens: int
    other_tier: str
    other_prompt_tokens: int
    other_completion_tokens: int
    kind: Literal["shadow", "cascade"] = "shadow"
    """shadow: the paired record is a shadow call; cascade: a cascade's first attempt (the request escalated)."""


@dataclass(frozen=True)
class Ratio:
    """Tokens on the target tier per token on the answering tier, over `pairs` measured pairs of a workload."""

    pairs: int
    source: str
    """"shadow" or "cascade": the pairs it was measured on."""
    prompt: float | None
    """Ratio of sums; None when the answering tier's prompts sum to zero (then `mean_prompt` is used)."""
    completion: float | None
    mean_prompt: float
    mean_completion: float

    def apply(self, prompt: int, completion: int) -> tuple[float, float]:
        return (prompt * self.prompt if self.prompt is not None else self.mean_prompt,
                completion * self.completion if self.completion is not None else self.mean_completion)

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "source": self.source, "prompt": self.prompt, "completion": self.completion,
                "mean_prompt": self.mean_prompt, "mean_completion": self.mean_completion}


class TokenBasis:
    """Measured counts by request and tier, and per-workload ratios between tiers, from pairs."""

    def __init__(self, measured: dict[str, dict[str, tuple[int, int]]], ratios: dict[tuple[str, str, str], Ratio]):
        self.measured = measured
        """primary request_id -> {tier: (prompt, completion)} of its paired records."""
        self.ratios = ratios
        """(workload, answering tier, target tier) -> Ratio."""

    @classmethod
    def empty(cls) -> TokenBasis:
        return cls({}, {})

    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair]) -> TokenBasis:
        measured: dict[str, dict[str, tuple[int, int]]] = {}
        # (kind, workload, from, to) -> [n, from_prompt, from_completion, to_prompt, to_completion]
        sums: dict[tuple[str, str, str, str], list[int]] = {}
        for p in pairs:
            if p.tier == p.other_tier:
                continue
            if p.other_tier in measured.setdefault(p.request_id, {}):
                continue  # one pair per request and tier: the first
            measured[p.request_id][p.other_tier] = (p.other_prompt_tokens, p.other_completion_tokens)
            a = (p.tier, p.prompt_tokens, p.completion_tokens)
            b = (p.other_tier, p.other_prompt_tokens, p.other_completion_tokens)
            for (src, sp, sc), (dst, dp, dc) in ((a, b), (b, a)):
                acc = sums.setdefault((p.kind, p.workload, src, dst), [0, 0, 0, 0, 0])
                acc[0] += 1
                acc[1] += sp
                acc[2] += sc
                acc[3] += dp
                acc[4] += dc
        ratios: dict[tuple[str, str, str], Ratio] = {}
        for kind in ("cascade", "shadow"):  # shadow pairs win: a sample of the traffic, not its hard cases
            for (k, *key), (n, sp, sc, dp, dc) in sums.items():
                if k == kind:
                    ratios[(key[0], key[1], key[2])] = Ratio(
                        pairs=n, source=kind, prompt=dp / sp if sp > 0 else None,
                        completion=dc / sc if sc > 0 else None, mean_prompt=dp / n, mean_completion=dc / n)
        return cls(measured, ratios)

    def ratio(self, workload: str, tier: str, target: str) -> Ratio | None:
        return self.ratios.get((workload, tier, target))

    def tokens(self, request_id: str | None, workload: str, tier: str, prompt: int, completion: int,
               target: str) -> tuple[float, float, Basis]:
        """The request's prompt and completion tokens on `target`, and how they were found."""
        if tier == target:
            return prompt, completion, "answered"
        if request_id is not None:
            on = self.measured.get(request_id)
            if on is not None and target in on:
                p, c = on[target]
                return p, c, "measured"
        r = self.ratios.get((workload, tier, target))
        if r is not None:
            p, c = r.apply(prompt, completion)
            return p, c, "ratio"
        return prompt, completion, "same_tokens"


def basis_label(basis: dict[str, Any]) -> str:
    """'12 answered there, 3 measured, 40 by ratio (9 pairs), 5 same tokens (estimate)': how a counterfactual's
    requests were counted in tokens; parts with no request are left out."""
    parts = []
    if basis.get("answered"):
        parts.append(f"{basis['answered']:,} answered there")
    if basis.get("measured"):
        parts.append(f"{basis['measured']:,} measured")
    if basis.get("ratio"):
        n = basis.get("ratio_pairs")
        pairs = "" if n is None else f" ({n:,} pair{'s' if n != 1 else ''})"
        parts.append(f"{basis['ratio']:,} by ratio{pairs}")
    if basis.get("same_tokens"):
        parts.append(f"{basis['same_tokens']:,} same tokens (estimate)")
    return ", ".join(parts) or "-"


def load_pairs(engine: Any, *, since: float | None = None, until: float | None = None,
               workload: str | None = None) -> Iterator[Pair]:
    """Every (primary, shadow) and (primary, cascade_first) pair whose primary arrived in the window, both `ok`
    and both with token counts, between two different tiers."""
    from sqlalchemy import select

    from tiergate.store.records import in_window
    from tiergate.store.schema import records

    p, s = records.alias("p"), records.alias("s")
    q = (select(p.c.request_id, p.c.workload, p.c.tier, p.c.prompt_tokens, p.c.completion_tokens,
                s.c.tier.label("other_tier"), s.c.prompt_tokens.label("other_prompt"),
                s.c.completion_tokens.label("other_completion"), s.c.role.label("other_role"))
         .join(s, s.c.parent_request_id == p.c.request_id)
         .where(p.c.role == "primary", p.c.status == "ok", s.c.role.in_(("shadow", "cascade_first")),
                s.c.status == "ok", p.c.tier.is_not(None), s.c.tier.is_not(None), p.c.tier != s.c.tier,
                p.c.prompt_tokens.is_not(None), p.c.completion_tokens.is_not(None),
                s.c.prompt_tokens.is_not(None), s.c.completion_tokens.is_not(None)))
    q = in_window(q, p, since=since, until=until, workload=workload)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=5000).execute(q.order_by(s.c.id)):
            yield Pair(str(row.request_id), str(row.workload), str(row.tier), int(row.prompt_tokens),
                       int(row.completion_tokens), str(row.other_tier), int(row.other_prompt),
                       int(row.other_completion), "shadow" if row.other_role == "shadow" else "cascade")
