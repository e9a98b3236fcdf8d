"""The `rollout` router: routes a workload by its rollout stage, read from the store.

    workloads:
      support-triage:
        task: classification
        policy:
          - kind: rollout
            primary: frontier          # answers until cutover (and after a rollback)
            candidate: small           # the tier being rolled out
            canary: [10, 50]           # shadow -> canary-10 -> canary-50 -> full
            shadow_fraction: 1.0       # share of primary answers also sent to the candidate, after the response
            verify_fraction: 0.1       # share of candidate answers also sent to the primary, to keep checking
            gates: {min_compared: 200, agreement: 0.95, confidence: 0.95, max_error_rate: 0.02}

Reasons: `rollout:shadow` (primary answers, candidate shadowed), `rollout:canary` (candidate answers a canary
request), `rollout:primary` (primary answers the rest of a canary), `rollout:full`, `rollout:rolled_back`.
The canary split is sticky per caller key (X-Tiergate-Sticky-Key or `user`): a caller in the 10% stays in the
50%. The stage is cached and re-read from the store every `refresh_s` (off the request path, by a follower task
while the gateway runs, idle or not), so gateway processes sharing a database, and rollout commands, take effect
within that time. Until a `RolloutManager` binds
a store (see `tiergate.rollout.manager.attach`), the router holds its state in memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tiergate.errors import ConfigError
from tiergate.rollout.gates import GateConfig
from tiergate.rollout.state import FULL, ROLLED_BACK, SHADOW, RolloutState, RolloutStore, default_stages
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext
from tiergate.routing.static import unit_interval

log = logging.getLogger("tiergate.rollout")


class RolloutOptions(RouterOptions):
    primary: str = Field(description="tier that answers until cutover and after a rollback")
    candidate: str = Field(description="tier being rolled out")
    canary: list[float] = Field(default_factory=lambda: [10.0, 50.0],
                                description="canary stages: percent of live traffic the candidate answers")
    shadow_fraction: float = Field(1.0, ge=0, le=1, description="share of primary answers also sent to the "
                                                                "candidate after the response (shadow pairs)")
    verify_fraction: float = Field(0.1, ge=0, le=1, description="share of candidate answers also sent to the "
                                                                "primary after the response, to keep checking")
    sticky: bool = Field(True, description="split canaries by the caller key when one is given")
    auto_advance: bool = Field(True, description="advance a stage when its gates pass")
    auto_rollback: bool = Field(True, description="roll back the moment a gate fails")
    gates: GateConfig = Field(default_factory=GateConfig)
    window: int = Field(500, ge=10, description="observations kept per stage for the gates")
    refresh_s: float = Field(1.0, gt=0, description="how often the stage is re-read from the store")
    shared_window_s: float = Field(
        5.0, ge=0, description="how often the gate window is rebuilt from the store, so gateway processes sharing "
                               "a database judge on all their evidence, not each on its own share (0: never)")
    task: Literal["classification", "extraction", "generation"] | None = Field(
        None, description="comparator to use (default: the workload's task)")
    labels: list[str] | None = Field(None, description="label set for comparing and checking answers "
                                                       "(default: monitor config, else the candidate tier's)")
    agree_at: float | None = Field(None, ge=0, le=1, description="score at which a pair agrees "
                                                                "(default 1.0 for labels/fields, 0.5 ROUGE-L)")
    seed: int | None = Field(None, description="seed for the random draws (tests)")

    @field_validator("canary")
    @classmethod
    def _percents(cls, v: list[float]) -> list[float]:
        if any(not 0 < p < 100 for p in v) or v != sorted(set(v)):
            raise ValueError("canary: increasing percentages between 0 and 100")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> RolloutOptions:
        if self.primary == self.candidate:
            raise ValueError("primary and candidate must be different tiers")
        return self


class RolloutRouter(Router):
    """Staged cutover from a primary tier to a candidate: shadow, canary stages, full; gates advance or roll back."""

    kind = "rollout"
    Options = RolloutOptions

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        opts: RolloutOptions = self.options  # type: ignore[assignment]
        self.opts = opts
        for field in ("primary", "candidate"):
            name = getattr(opts, field)
            if name not in ctx.tiers:
                raise ConfigError(f"workloads.{ctx.workload}: rollout {field}: unknown tier {name!r}")
        self.workload = ctx.workload
        self.stages = default_stages(opts.canary)
        now = time.time()
        self.state = RolloutState(ctx.workload, SHADOW, self.stages, opts.primary, opts.candidate, 0, now, now,
                                  reason="in memory: no store bound")
        self.store: RolloutStore | None = None
        self.manager: Any = None
        """The RolloutManager that judges this rollout (set by `attach`)."""
        self.on_change: list[Any] = []
        """Callbacks `fn(old_state, new_state)` run on the event loop when the stage or version changes."""
        self._rng = random.Random(opts.seed)
        self._loaded_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------------------------------------
    def bind(self, store: RolloutStore) -> None:
        self.store = store

    async def start(self) -> None:
        if self.manager is not None:
            await self.manager.start_runtime(self.manager.runtimes[self.workload])
        elif self.store is not None:
            await self.load()

    async def load(self) -> None:
        """Create or read the workload's rollout row (blocking work off the event loop)."""
        store = self.store
        assert store is not None
        state = await asyncio.to_thread(store.ensure, self.workload, primary=self.opts.primary,
                                        candidate=self.opts.candidate, stages=self.stages)
        self.apply(state)

    async def refresh(self) -> None:
        if self.store is None:
            return
        try:
            state = await asyncio.to_thread(self.store.get, self.workload)
        except Exception as exc:  # the store is down: keep routing by the last known stage
            log.warning("rollout %s: cannot read the stage (%s); keeping %s", self.workload,
                        exc.__class__.__name__, self.state.stage)
            self._loaded_at = time.monotonic()
            return
        if state is None:
            await self.load()
        else:
            self.apply(state)

    def apply(self, state: RolloutState) -> None:
        """Adopt a state read from (or just written to) the store, if it is newer than the one held."""
        self._loaded_at = time.monotonic()
        old = self.state
        if state.version == old.version and state.stage == old.stage:
            return
        if self.store is not None and state.version < old.version:
            return
        self.state = state
        for fn in self.on_change:
            try:
                fn(old, state)
            except Exception:
                log.exception("rollout %s: change callback failed", self.workload)

    async def follow(self) -> None:
        """Re-read the stage every `refresh_s` whether or not requests arrive, so that the first request after a
        quiet spell is routed on the stage of at most `refresh_s` ago (a rollback from the CLI or from another
        gateway process included), not on the one held when the last request came."""
        while True:
            await asyncio.sleep(max(0.0, self.opts.refresh_s - (time.monotonic() - self._loaded_at)))
            if time.monotonic() - self._loaded_at >= self.opts.refresh_s:
                try:
                    await asyncio.shield(self._refresh_task())
                except Exception:  # keep following: the next round may read it
                    log.exception("rollout %s: cannot refresh the stage", self.workload)
                    self._loaded_at = time.monotonic()

    def _refresh_task(self) -> asyncio.Task[None]:
        """The refresh in flight, or a new one: one at a time, shared by requests and the follower."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        return self._refreshing

    def _maybe_refresh(self) -> None:
        if self.store is not None and time.monotonic() - self._loaded_at >= self.opts.refresh_s:
            self._refresh_task()

    # -- routing -------------------------------------------------------------------------------------------
    async def adecide(self, req: RouteRequest) -> RouteDecision | None:
        self._maybe_refresh()
        return self.decide(req)

    def decide(self, req: RouteRequest) -> RouteDecision:
        state, opts = self.state, self.opts
        stage = state.stage
        if stage == ROLLED_BACK:
            return RouteDecision(state.primary, "rollout:rolled_back")
        if stage == SHADOW:
            return RouteDecision(state.primary, "rollout:shadow", shadow=self._draw(opts.shadow_fraction,
                                                                                     state.candidate))
        if stage == FULL:
            return RouteDecision(state.candidate, "rollout:full", score=1.0,
                                 shadow=self._draw(opts.verify_fraction, state.primary))
        if opts.sticky and req.sticky_key:
            u = unit_interval(req.sticky_key, f"{self.workload}:rollout")
        else:
            u = self._rng.random()
        if u * 100.0 < state.percent:
            return RouteDecision(state.candidate, "rollout:canary", score=u,
                                 shadow=self._draw(opts.verify_fraction, state.primary))
        return RouteDecision(state.primary, "rollout:primary", score=u,
                             shadow=self._draw(opts.shadow_fraction, state.candidate))

    def _draw(self, fraction: float, tier: str) -> str | None:
        if fraction >= 1.0 or (fraction > 0 and self._rng.random() < fraction):
            return tier
        return None
