"""The first routers: a static tier per workload and a weighted split (sticky per caller key)."""

from __future__ import annotations

import hashlib
import random

from pydantic import Field, field_validator

from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions


class StaticRouter(Router):
    """Every request of the workload goes to one tier."""

    kind = "static"

    class Options(RouterOptions):
        tier: str = Field(description="the tier that answers")

    def decide(self, req: RouteRequest) -> RouteDecision:
        return RouteDecision(self.options.tier, "static")  # type: ignore[attr-defined]


def unit_interval(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for a key: the same caller lands on the same side of a split."""
    digest = hashlib.blake2b((salt + "\x00" + key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SplitRouter(Router):
    """Weighted split between tiers; sticky per caller key (X-Tiergate-Sticky-Key or `user`) when one is given."""

    kind = "split"

    class Options(RouterOptions):
        weights: dict[str, float] = Field(description="tier -> weight; weights are normalised")
        sticky: bool = Field(True, description="hash the caller key instead of drawing at random")
        seed: int | None = Field(None, description="seed for the random draw (tests)")

        @field_validator("weights")
        @classmethod
        def _positive(cls, v: dict[str, float]) -> dict[str, float]:
            if not v:
                raise ValueError("weights: at least one tier")
            if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
                raise ValueError("weights must be non-negative and sum to more than 0")
            return v

    def __init__(self, options: RouterOptions, ctx: object) -> None:
        super().__init__(options, ctx)  # type: ignore[arg-type]
        weights = self.options.weights  # type: ignore[attr-defined]
        total = sum(weights.values())
        acc = 0.0
        self._cuts: list[tuple[float, str]] = []
        for tier, w in weights.items():
            acc += w / total
            self._cuts.append((acc, tier))
        self._rng = random.Random(self.options.seed)  # type: ignore[attr-defined]

    def decide(self, req: RouteRequest) -> RouteDecision:
        if self.options.sticky and req.sticky_key:  # type: ignore[attr-defined]
            u = unit_interval(req.sticky_key, req.workload)
        else:
            u = self._rng.random()
        for cut, tier in self._cuts:
            if u < cut:
                return RouteDecision(tier, "split", score=u)
        return RouteDecision(self._cuts[-1][1], "split", score=u)
