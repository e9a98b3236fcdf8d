"""Cost-quality curves of a router, their measures, and threshold selection.

A router gives each prompt an *escalation score* (higher: the large tier is more needed); for a threshold t
the prompts with score > t go to the large tier. Sweeping t traces the router's curve, from all-small to
all-large, in (large-tier share, cost, quality).

    curve = routing_curve(router_scores, small_scores, large_scores, small_costs, large_costs)
    apgr(curve), cpt(curve, 0.5), cpt(curve, 0.8)       # RouteLLM (Ong et al. 2024)
    aiq(curve)                                           # RouterBench (Hu et al. 2024): area under the hull
    compare_routers(router_scores, ...)                  # the router beside a random router and the oracle
    threshold_for_share(val_scores, large_share=0.2)     # calibrate to a share of large-tier traffic
    threshold_for_quality(val_scores, s, l, floor=0.95)  # ... or to a quality floor (95% of the large tier's)
    threshold_for_recall(oos_scores, 0.95)               # escalate at least 95% of known out-of-scope examples

Definitions, all on the same prompts:
- PGR(f) = (q(f) - q_small) / (q_large - q_small): the share of the quality gap recovered at large share f.
- APGR = integral of PGR over f in [0, 1] (trapezoids over the exact curve; a random router scores 0.5).
- CPT(x) = the least large share whose PGR reaches x (linear between curve points).
- AIQ = the area under the non-decreasing upper convex hull of the (cost, quality) points, over the cost range
  from all-small to all-large, divided by that range (the large-share axis when costs are equal).
- random router: the expectation of sending each prompt to the large tier with probability f (a straight line).
- oracle: sends first the prompts where the large tier gains most over the small one (ties: the cheaper first).
numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CurvePoint:
    large_share: float
    cost: float
    quality: float
    threshold: float | None
    """Escalate when score > threshold gives this point (None for the random router's points)."""


def _as(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def routing_curve(router_scores: Any, small_scores: Any, large_scores: Any, small_costs: Any = None,
                  large_costs: Any = None) -> list[CurvePoint]:
    """Every operating point of a threshold on `router_scores` (prompts with equal scores move together)."""
    r, s, lg = _as(router_scores), _as(small_scores), _as(large_scores)
    n = len(r)
    if n == 0 or not (len(s) == len(lg) == n):
        raise ValueError("router, small and large scores must be non-empty and of one length")
    cs = _as(small_costs) if small_costs is not None else np.zeros(n)
    cl = _as(large_costs) if large_costs is not None else np.ones(n)
    order = np.argsort(-r, kind="stable")
    rs = r[order]
    gain_q = np.concatenate([[0.0], np.cumsum((lg - s)[order])])
    gain_c = np.concatenate([[0.0], np.cumsum((cl - cs)[order])])
    base_q, base_c = float(s.sum()), float(cs.sum())
    # group ends: positions k where rs[k-1] != rs[k] (a threshold cannot split equal scores)
    cuts = [0] + [k for k in range(1, n) if rs[k] != rs[k - 1]] + [n]
    points = []
    for k in cuts:
        if k == 0:
            thr: float = float(rs[0])
        elif k == n:
            thr = float(np.nextafter(rs[-1], -np.inf))  # just under the least score (a probability stays one)
        else:
            thr = float(rs[k])
        points.append(CurvePoint(k / n, float((base_c + gain_c[k]) / n), float((base_q + gain_q[k]) / n), thr))
    return points


def oracle_scores(small_scores: Any, large_scores: Any, small_costs: Any = None, large_costs: Any = None) -> np.ndarray:
    """Escalation scores of the oracle: the quality gain of the large tier, ties broken towards lower extra cost."""
    s, lg = _as(small_scores), _as(large_scores)
    gain = lg - s
    if small_costs is None or large_costs is None:
        return gain
    extra = _as(large_costs) - _as(small_costs)
    spread = float(np.ptp(extra)) or 1.0
    steps = np.unique(gain)
    gap = float(np.min(np.diff(steps))) if len(steps) > 1 else 1.0
    return gain - 0.5 * gap * (extra - extra.min()) / spread  # type: ignore[no-any-return]


def random_curve(small_scores: Any, large_scores: Any, small_costs: Any = None, large_costs: Any = None,
                 steps: int = 100) -> list[CurvePoint]:
    """The expected curve of a router that escalates each prompt with probability f."""
    s, lg = _as(small_scores), _as(large_scores)
    cs = float(_as(small_costs).mean()) if small_costs is not None else 0.0
    cl = float(_as(large_costs).mean()) if large_costs is not None else 1.0
    qs, ql = float(s.mean()), float(lg.mean())
    return [CurvePoint(float(f), float(cs + f * (cl - cs)), float(qs + f * (ql - qs)), None)
            for f in np.linspace(0.0, 1.0, steps + 1)]


def _xy(curve: list[CurvePoint], axis: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([getattr(p, axis) for p in curve])
    y = np.array([p.quality for p in curve])
    return x, y


def _trapz(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def pgr(curve: list[CurvePoint]) -> np.ndarray | None:
    """Performance gap recovered at each point; None when the large tier is not better than the small one."""
    q_small, q_large = curve[0].quality, curve[-1].quality
    if q_large <= q_small:
        return None
    return (np.array([p.quality for p in curve]) - q_small) / (q_large - q_small)  # type: ignore[no-any-return]


def apgr(curve: list[CurvePoint]) -> float | None:
    g = pgr(curve)
    if g is None:
        return None
    x = np.array([p.large_share for p in curve])
    return _trapz(g, x)


def cpt(curve: list[CurvePoint], target: float) -> float | None:
    """The least large-tier share at which the router recovers `target` of the quality gap."""
    g = pgr(curve)
    if g is None:
        return None
    x = np.array([p.large_share for p in curve])
    for i in range(len(g)):
        if g[i] >= target - 1e-12:
            if i == 0:
                return float(x[0])
            # linear between the last point below and this one
            frac = (target - g[i - 1]) / (g[i] - g[i - 1])
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return None


def upper_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of the points (x, y): cost can only buy quality."""
    best: dict[float, float] = {}
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        best[xi] = max(yi, best.get(xi, yi))
    pts = sorted(best.items())
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] lies on or below the chord
                hull.pop()
            else:
                break
        hull.append(p)
    hx, hy = np.array([p[0] for p in hull]), np.array([p[1] for p in hull])
    top = int(np.argmax(hy))
    return hx[: top + 1], hy[: top + 1]


def aiq(curve: list[CurvePoint], x_range: tuple[float, float] | None = None, axis: str = "cost") -> float:
    """RouterBench's average improvement in quality: mean height of the non-decreasing hull over `x_range`
    (default: the curve's own cost range). Beyond the hull's last point, quality stays at its best."""
    x, y = _xy(curve, axis)
    lo, hi = x_range if x_range is not None else (float(x.min()), float(x.max()))
    if hi <= lo:
        return float(y.max())
    hx, hy = upper_hull(x, y)
    grid_x = np.concatenate([[lo], hx[(hx > lo) & (hx < hi)], [hi]])
    grid_y = np.interp(grid_x, hx, hy, left=float(hy[0]), right=float(hy[-1]))
    if lo < hx[0]:  # points cheaper than the hull's start cannot be reached: count them at zero quality gain
        grid_y[grid_x < hx[0]] = float(hy[0])
    return float(_trapz(grid_y, grid_x) / (hi - lo))


def summarize(curve: list[CurvePoint], x_range: tuple[float, float] | None, axis: str) -> dict[str, Any]:
    return {"apgr": apgr(curve), "cpt_50": cpt(curve, 0.5), "cpt_80": cpt(curve, 0.8),
            "aiq": aiq(curve, x_range, axis)}


def thin(curve: list[CurvePoint], max_points: int = 201) -> list[dict[str, Any]]:
    """At most `max_points` of a curve (both ends kept), as plain dicts for JSON."""
    if len(curve) <= max_points:
        keep = range(len(curve))
    else:
        keep = sorted(set(np.linspace(0, len(curve) - 1, max_points).round().astype(int).tolist()))
    return [asdict(curve[i]) for i in keep]


def compare_routers(router_scores: Any, small_scores: Any, large_scores: Any, small_costs: Any = None,
                    large_costs: Any = None, *, threshold: float | None = None, max_points: int = 201
                    ) -> dict[str, Any]:
    """The router's curve and measures beside a random router and the oracle, on the same prompts."""
    s, lg = _as(small_scores), _as(large_scores)
    have_costs = small_costs is not None and large_costs is not None
    router = routing_curve(router_scores, s, lg, small_costs, large_costs)
    oracle = routing_curve(oracle_scores(s, lg, small_costs, large_costs), s, lg, small_costs, large_costs)
    rand = random_curve(s, lg, small_costs, large_costs)
    c_small, c_large = router[0].cost, router[-1].cost
    axis = "cost" if have_costs and c_large != c_small else "large_share"
    x_range = (min(c_small, c_large), max(c_small, c_large)) if axis == "cost" else (0.0, 1.0)
    out: dict[str, Any] = {
        "n": len(s), "axis": axis,
        "all_small": {"quality": float(s.mean()), "cost": c_small},
        "all_large": {"quality": float(lg.mean()), "cost": c_large},
        "oracle_best": {"quality": float(np.maximum(s, lg).mean()), "large_share": float(np.mean(lg > s))},
        "router": summarize(router, x_range, axis),
        "random": summarize(rand, x_range, axis),
        "oracle": summarize(oracle, x_range, axis),
        "curves": {"router": thin(router, max_points), "random": thin(rand, max_points),
                   "oracle": thin(oracle, max_points)},
    }
    if threshold is not None:
        out["operating_point"] = operating_point(router_scores, s, lg, small_costs, large_costs, threshold)
    return out


def operating_point(router_scores: Any, small_scores: Any, large_scores: Any, small_costs: Any,
                    large_costs: Any, threshold: float) -> dict[str, Any]:
    r = _as(router_scores)
    esc = r > threshold
    s, lg = _as(small_scores), _as(large_scores)
    q = np.where(esc, lg, s)
    point: dict[str, Any] = {"threshold": threshold, "large_share": float(esc.mean()), "quality": float(q.mean())}
    if small_costs is not None and large_costs is not None:
        point["cost"] = float(np.where(esc, _as(large_costs), _as(small_costs)).mean())
    if lg.mean() > s.mean():
        point["pgr"] = float((q.mean() - s.mean()) / (lg.mean() - s.mean()))
    point["quality_vs_large"] = float(q.mean() / lg.mean()) if lg.mean() else None
    return point


# -- threshold selection ---------------------------------------------------------------------------------------
def _candidates(scores: np.ndarray) -> list[tuple[float, float]]:
    """(threshold, large share) for every distinct cut, thresholds halfway between neighbouring values."""
    v = np.unique(scores)  # ascending
    out = [(float(v[-1]), 0.0)]
    for j in range(len(v) - 1, 0, -1):
        t = float((v[j] + v[j - 1]) / 2.0)
        out.append((t, float(np.mean(scores > t))))
    out.append((float(np.nextafter(v[0], -np.inf)), 1.0))  # just under the least score: a probability stays one
    return out


def threshold_for_share(scores: Any, large_share: float) -> float:
    """The threshold whose large-tier share on `scores` is nearest `large_share` (ties: the smaller share)."""
    if not 0.0 <= large_share <= 1.0:
        raise ValueError("large_share must be in [0, 1]")
    r = _as(scores)
    best = min(_candidates(r), key=lambda c: (abs(c[1] - large_share), c[1]))
    return best[0]


def threshold_for_recall(positive_scores: Any, recall: float) -> float:
    """The highest threshold that escalates (score > threshold) at least `recall` of `positive_scores` (examples
    that should escalate): the least escalation that reaches the recall on these examples."""
    if not 0.0 < recall <= 1.0:
        raise ValueError("recall must be in (0, 1]")
    r = np.sort(_as(positive_scores))[::-1]
    if not len(r):
        raise ValueError("threshold_for_recall needs at least one score")
    need = max(1, int(np.ceil(recall * len(r) - 1e-9)))
    return float(np.nextafter(r[need - 1], -np.inf))


def threshold_for_quality(router_scores: Any, small_scores: Any, large_scores: Any, floor: float,
                          small_costs: Any = None, large_costs: Any = None) -> tuple[float, CurvePoint]:
    """The cheapest threshold whose quality is at least `floor` times the all-large quality
    (e.g. floor=0.95: at least 95% of the frontier's quality). Escalates everything when none reaches it."""
    curve = routing_curve(router_scores, small_scores, large_scores, small_costs, large_costs)
    target = floor * curve[-1].quality
    ok = [p for p in curve if p.quality >= target - 1e-12]
    best = min(ok, key=lambda p: (p.cost, p.large_share)) if ok else curve[-1]
    assert best.threshold is not None
    return best.threshold, best


# -- selective answering (cascades) ---------------------------------------------------------------------------
def selective_curve(confidence: Any, correct: Any) -> list[dict[str, float]]:
    """Keep answers with confidence >= t: for each distinct t, the kept share and the accuracy on what is kept
    (the risk-coverage curve, highest threshold first)."""
    c, ok = _as(confidence), _as(correct)
    order = np.argsort(-c, kind="stable")
    cs, hits = c[order], np.cumsum(ok[order])
    n = len(c)
    out = []
    for k in range(1, n + 1):
        if k < n and cs[k] == cs[k - 1]:
            continue
        out.append({"threshold": float(cs[k - 1]), "kept_share": k / n, "accuracy_kept": float(hits[k - 1] / k)})
    return out


def threshold_for_selective_accuracy(confidence: Any, correct: Any, target: float) -> tuple[float, dict[str, float]]:
    """The lowest confidence threshold (most answers kept) whose accuracy on the kept answers is >= target.
    Returns (threshold, point); when no threshold reaches the target, the one keeping least (threshold above
    every confidence, nothing kept)."""
    curve = selective_curve(confidence, correct)
    ok = [p for p in curve if p["accuracy_kept"] >= target]
    if not ok:
        top = float(np.max(_as(confidence)))
        return float(np.nextafter(top, np.inf)), {"threshold": top, "kept_share": 0.0, "accuracy_kept": float("nan")}
    best = max(ok, key=lambda p: p["kept_share"])
    return best["threshold"], best


def threshold_for_keep_share(confidence: Any, kept_share: float) -> float:
    """The confidence threshold keeping (confidence >= t) the share nearest `kept_share`."""
    c = _as(confidence)
    # keep iff c >= t  <=>  escalate iff -c > -t
    return -threshold_for_share(-c, 1.0 - kept_share)
