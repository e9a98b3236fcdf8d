"""Workload discovery on captured traffic: which requests form narrow, repetitive workloads worth moving?

    result = analyze_store(engine, config, since=parse_since("30d"))          # embeds with the bundled MiniLM
    result = discover(records, embed=my_embed, window=Window(...), small=("small", pricer))   # pure core
    result.to_dict()["clusters"][0]["quadrant"]                               # "move first"

Each cluster reports its volume (requests a month, extrapolated from the observed window), spend, output
structure (labels, JSON or free text, `tiergate.analyze.structure`), repetitiveness (share of near-duplicate
requests, entropy of its answers), task specificity (mean cosine similarity of its requests), the names the
callers gave its requests, a representative request, its quadrant, and the projected monthly saving of moving
it to the small tier (the small tier's price for its requests against their current spend, priced records only;
the requests' tokens on the small tier are the measured ones where shadow or cascade pairs hold them, else scaled
by the workload's measured ratio, else their own: `small_token_basis` counts each).

Quadrants (specificity against volume): "move first" (specific, high volume), "move when volume grows"
(specific, low volume), "route per request" (diverse, high volume: a router sends the routine part to the small
tier), "keep on frontier" (diverse, low volume). The volume line defaults to the advisor's decision threshold.
Small groups of diverse requests are pooled into one "other" entry (id -1, `other: true`), placed like the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiergate.analyze.cluster import (
    Embed,
    cluster_requests,
    near_duplicate_share,
    representative,
    request_features,
    request_texts,
    specificity,
)
from tiergate.analyze.structure import output_structure
from tiergate.costs.pricing import Pricer
from tiergate.costs.report import Window
from tiergate.costs.token_basis import BASES, TokenBasis

MOVE_FIRST, WHEN_GROWS, ROUTE, KEEP, TOO_FEW = (
    "move first", "move when volume grows", "route per request", "keep on frontier", "too few requests")


def default_volume_threshold() -> float:
    from tiergate.costs.profile import Thresholds

    return float(Thresholds.model_validate({}).volume_per_month)


def quadrant(spec: float | None, volume_per_month: float | None, spec_threshold: float, volume_threshold: float) -> str:
    if spec is None or volume_per_month is None:
        return TOO_FEW
    if spec >= spec_threshold:
        return MOVE_FIRST if volume_per_month >= volume_threshold else WHEN_GROWS
    return ROUTE if volume_per_month >= volume_threshold else KEEP


@dataclass
class Analysis:
    clusters: list[dict[str, Any]]
    labels: np.ndarray
    """Cluster id of every analysed record, in input order."""
    request_ids: list[str]
    silhouette: dict[int, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        by_workload: dict[str, dict[str, int]] = {}
        for c in self.clusters:
            for name, count in c["workloads"].items():
                by_workload.setdefault(name, {})[str(c["id"])] = count
        return {**self.meta, "k": sum(not c["other"] for c in self.clusters), "silhouette": {str(k): v for k, v in self.silhouette.items()},
                "clusters": self.clusters, "by_workload": dict(sorted(by_workload.items()))}


def _cost_sum(costs: Sequence[float | None]) -> tuple[float, int]:
    known = [c for c in costs if c is not None]
    return float(sum(known)), len(costs) - len(known)


def discover(
    records: Sequence[dict[str, Any]],
    *,
    embed: Embed,
    window: Window,
    scale: float = 1.0,
    clusters: int | str = "auto",
    small: tuple[str, Pricer] | None = None,
    spec_threshold: float = 0.3,
    volume_threshold: float | None = None,
    system_weight: float = 0.5,
    answer_weight: float = 0.5,
    min_share: float = 0.05,
    dup_threshold: float = 0.95,
    basis: TokenBasis | None = None,
) -> Analysis:
    """Cluster `records` (dicts with request_id, workload, tier, messages, answer, prompt_tokens,
    completion_tokens and cost_usd: the request's whole cost, a cascade's first attempt included) and describe
    each cluster. `scale` is how many captured requests each record stands for (a sample of the traffic).
    `basis`: the requests' token counts on the small tier where shadow or cascade pairs measured them (see
    tiergate.costs.token_basis; none: their own counts)."""
    tokens = basis if basis is not None else TokenBasis.empty()
    vol_line = default_volume_threshold() if volume_threshold is None else volume_threshold
    texts = [request_texts(r.get("messages")) for r in records]
    features, users, used = request_features([u for u, _ in texts], [s for _, s in texts], [r.get("answer") for r in records],
                                       embed, system_weight, answer_weight)
    labels, scores = cluster_requests(features, clusters, min_share=min_share)
    factor = window.monthly_factor
    out = []
    for cid in sorted(set(labels.tolist()), key=lambda c: (c < 0, c)):
        idx = np.flatnonzero(labels == cid)
        members = [records[int(i)] for i in idx]
        vecs = users[idx]
        spent, unpriced = _cost_sum([r.get("cost_usd") for r in members])
        priced = [r for r in members if r.get("cost_usd") is not None]
        spec = specificity(vecs)
        volume = None if factor is None else len(idx) * scale * factor
        structure = output_structure([r.get("answer") for r in members])
        entry: dict[str, Any] = {
            "id": cid, "other": cid < 0, "requests": len(idx), "share": len(idx) / len(records),
            "workloads": dict(Counter(str(r.get("workload")) for r in members).most_common()),
            "tiers": dict(Counter(str(r.get("tier")) for r in members).most_common()),
            "volume_per_month": volume,
            "spend_usd": None if unpriced == len(members) else spent * scale,
            "unpriced_requests": unpriced,
            "spend_per_month_usd": None if unpriced == len(members) or factor is None else spent * scale * factor,
            "structure": structure.as_dict(),
            "near_duplicate_share": near_duplicate_share(vecs, dup_threshold),
            "answer_entropy_bits": structure.answer_entropy_bits,
            "specificity": spec,
            "representative": texts[idx[representative(vecs)]][0][:300],
            "quadrant": quadrant(spec, volume, spec_threshold, vol_line),
            "small_tier": None, "small_per_month_usd": None, "saving_per_month_usd": None, "small_token_basis": None,
        }
        entry["workload"] = next(iter(entry["workloads"]))
        if small is not None and not small[1].unknown and factor is not None and priced:
            on_small, how = 0.0, Counter[str]()
            for r in priced:
                p, c, kind = tokens.tokens(str(r.get("request_id")), str(r.get("workload")), str(r.get("tier")),
                                           int(r.get("prompt_tokens") or 0), int(r.get("completion_tokens") or 0),
                                           small[0])
                on_small += small[1].cost(p, c)
                how[kind] += 1
            entry.update(small_tier=small[0], small_per_month_usd=on_small * scale * factor,
                         saving_per_month_usd=(spent - on_small) * scale * factor,
                         small_token_basis={k: how[k] for k in BASES})
        out.append(entry)
    out.sort(key=lambda c: (c["other"], c["saving_per_month_usd"] is None, -(c["saving_per_month_usd"] or 0),
                            -c["requests"]))
    meta = {"analyzed": len(records), "scale": scale, "window": window.as_dict(),
            "features": used,
            "clusters_requested": str(clusters),
            "cut_k": max(scores, key=lambda k: scores[k]) if scores else None,
            "small_tier": None if small is None else small[0],
            "thresholds": {"specificity": spec_threshold, "volume_per_month": vol_line, "min_share": min_share,
                           "near_duplicate_similarity": dup_threshold}}
    return Analysis(out, labels, [str(r.get("request_id")) for r in records], scores, meta)


# -- from the store ---------------------------------------------------------------------------------------------

def load_requests(engine: Any, *, since: float | None = None, until: float | None = None,
                  workload: str | None = None, max_requests: int = 20000) -> tuple[list[dict[str, Any]], int, int]:
    """Answered primary requests with captured messages (beyond `max_requests`, a systematic sample: every
    n-th of them in arrival order), each with its cascade first attempt's cost added; and the counts of eligible requests and
    of answered requests without captured messages."""
    from sqlalchemy import func, select

    from tiergate.store.schema import records as r

    def where(q: Any, role: str) -> Any:
        q = q.where(r.c.role == role, r.c.status == "ok")
        for cond in (None if since is None else r.c.created_at >= since, None if until is None else r.c.created_at < until,
                     None if workload is None else r.c.workload == workload):
            if cond is not None:
                q = q.where(cond)
        return q

    cols = (r.c.request_id, r.c.workload, r.c.tier, r.c.messages, r.c.answer, r.c.prompt_tokens,
            r.c.completion_tokens, r.c.cost_usd)
    with engine.connect() as conn:
        eligible = conn.execute(where(select(func.count()).select_from(r), "primary")
                                .where(r.c.messages.is_not(None))).scalar_one()
        total = conn.execute(where(select(func.count()).select_from(r), "primary")).scalar_one()
        q = where(select(*cols), "primary").where(r.c.messages.is_not(None))
        if eligible > max_requests:
            # every step-th eligible request, counted among the eligible ones (not by record id: shadows and
            # cascade first attempts take ids between requests, so ids step with a pattern of their own)
            step = -(-eligible // max_requests)
            ranked = where(select(r.c.id, func.row_number().over(order_by=r.c.id).label("n")), "primary").where(
                r.c.messages.is_not(None)).subquery()
            q = q.where(r.c.id.in_(select(ranked.c.id).where((ranked.c.n - 1) % step == 0)))
        q = q.order_by(r.c.id).limit(max_requests)
        rows = [dict(row._mapping) for row in conn.execute(q)]
        firsts = {p: c for p, c in conn.execute(where(select(r.c.parent_request_id, r.c.cost_usd), "cascade_first"))}
    for row in rows:
        if row["request_id"] in firsts:
            extra = firsts[row["request_id"]]
            row["cost_usd"] = None if extra is None or row["cost_usd"] is None else row["cost_usd"] + extra
    # a JSON column holding SQL NULL and one holding JSON null both read as None; skip the latter too
    rows = [row for row in rows if row["messages"]]
    return rows, int(eligible), int(total - eligible)


def choose_small_tier(config: Any, pricers: dict[str, Pricer], records: Sequence[dict[str, Any]],
                      requested: str | None = None) -> tuple[str, Pricer] | None:
    """`requested`, else the on-prem tier that would cost least on these records, else the cheapest priced tier."""
    from tiergate.errors import ConfigError

    if requested is not None:
        if requested not in pricers:
            raise ConfigError(f"--small-tier {requested!r}: not a configured tier ({', '.join(pricers)})")
        return requested, pricers[requested]
    priced = [t for t, p in pricers.items() if not p.unknown]
    pool = [t for t in priced if config.tiers[t].zone == "on_prem"] or priced
    if not pool:
        return None

    def cost(t: str) -> float:
        return sum(pricers[t].cost(int(r.get("prompt_tokens") or 0), int(r.get("completion_tokens") or 0)) for r in records)

    best = min(pool, key=cost)
    return best, pricers[best]


# option -> (check, what a valid value is); names as the CLI spells them, so an error names the flag
_RANGES: dict[str, tuple[Any, str]] = {
    "max_requests": (lambda v: v >= 2, "at least 2 (requests to analyse)"),
    "spec_threshold": (lambda v: -1 <= v <= 1, "between -1 and 1 (a mean cosine similarity)"),
    "volume_threshold": (lambda v: v >= 0, "a number of requests a month, 0 or more"),
    "system_weight": (lambda v: v >= 0, "0 or more (0 leaves the system prompt out)"),
    "answer_weight": (lambda v: v >= 0, "0 or more (0 leaves the answer form out)"),
    "min_share": (lambda v: 0 <= v < 1, "a share of the traffic, at least 0 and under 1"),
    "dup_threshold": (lambda v: -1 <= v <= 1, "between -1 and 1 (a cosine similarity)"),
}
_FLAGS = {"spec_threshold": "--specificity-threshold"}


def check_options(**options: Any) -> None:
    """Refuse out-of-range analysis options (ConfigError naming the flag) before any work starts."""
    import math

    from tiergate.errors import ConfigError

    for name, value in options.items():
        if value is None or name not in _RANGES:
            continue
        ok, valid = _RANGES[name]
        if not (math.isfinite(value) and ok(value)):
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            raise ConfigError(f"{flag} {value:g}: must be {valid}")


def analyze_store(engine: Any, config: Any, *, since: float | None = None, until: float | None = None,
                  workload: str | None = None, clusters: int | str = "auto", small_tier: str | None = None,
                  embed: Embed | None = None, max_requests: int = 20000, book: Any = None,
                  **options: Any) -> Analysis:
    """Load captured requests and `discover` workloads among them (options: spec_threshold, volume_threshold,
    system_weight, answer_weight, min_share, dup_threshold)."""
    from tiergate.analyze.cluster import minilm_embedder
    from tiergate.costs.report import check_workload, tier_pricers, traffic_window
    from tiergate.costs.token_basis import load_pairs
    from tiergate.errors import DataError

    check_options(max_requests=max_requests, **options)
    if workload is not None:
        check_workload(engine, config, workload)  # a typo names the workloads there are, not "too few requests"
    rows, eligible, without = load_requests(engine, since=since, until=until, workload=workload,
                                            max_requests=max_requests)
    if len(rows) < 2:
        raise DataError(f"{len(rows)} answered request(s) with captured messages in the window: too few to analyse"
                        + (f" ({without} without messages: store.capture_messages is off?)" if without else ""))
    window = traffic_window(engine, since=since, until=until, workload=workload)
    small = choose_small_tier(config, tier_pricers(config, book), rows, small_tier)
    basis = TokenBasis.from_pairs(load_pairs(engine, since=since, until=until, workload=workload))
    result = discover(rows, embed=embed or minilm_embedder(), window=window, scale=eligible / len(rows),
                      clusters=clusters, small=small, basis=basis, **options)
    result.meta.update(eligible=eligible, without_messages=without, default_workload=config.routing.default_workload)
    return result
