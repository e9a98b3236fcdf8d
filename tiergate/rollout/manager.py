"""The rollout manager: scores shadow pairs, keeps each workload's gate window, moves the stage.

    manager = attach(app)               # binds every `rollout` router to the store, joins gateway.observers
    await manager.start()               # only when attached after the gateway started (tests)

As a gateway observer it sees every answer (`on_record`) and every shadow pair (`on_shadow`, before the shadow
record is stored). Each pair involving a rollout's candidate is scored with the task's comparator and checked
for hallucinations; the result is written into the shadow record (`response["rollout"]`), so the windows can be
rebuilt from the store after a restart. Candidate answers served live (canary, full) add their errors,
latency and hallucination flags. After every observation the gates are judged: a failing gate rolls back at
once (when `auto_rollback`), passing gates advance the stage (when `auto_advance` and not held). Transitions
are compare-and-set writes run off the event loop; a process that loses the race adopts the winner's stage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from tiergate.monitor.hallucination import CheckSpec
from tiergate.rollout.gates import Observation, Verdict, advance_hold, evaluate, next_action
from tiergate.rollout.router import RolloutRouter
from tiergate.rollout.scoring import Runtime, pair_observation, rebuild_window, served_observation
from tiergate.rollout.state import FULL, ROLLED_BACK, RolloutState, RolloutStore

log = logging.getLogger("tiergate.rollout")


class RolloutManager:
    def __init__(self, gateway: Any, store: RolloutStore, specs: dict[str, CheckSpec] | None = None) -> None:
        self.gateway = gateway
        self.store = store
        self.specs = specs or {}
        self.runtimes: dict[str, Runtime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._metrics = _RolloutMetrics(getattr(getattr(gateway, "metrics", None), "registry", None))
        for router in gateway.routing.routers():
            if isinstance(router, RolloutRouter):
                self._add(router)

    def _add(self, router: RolloutRouter) -> None:
        rt = Runtime.build(router, self.gateway.config, self.specs)
        self.runtimes[rt.workload] = rt
        router.bind(self.store)
        router.manager = self
        router.on_change.append(lambda old, new, rt=rt: self._changed(rt, old, new))

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every rollout's stage and rebuild its window from the store (idempotent)."""
        for rt in self.runtimes.values():
            await self.start_runtime(rt)

    async def start_runtime(self, rt: Runtime) -> None:
        if rt.started:
            return
        rt.started = True
        await rt.router.load()
        if rt.labels is None:
            tier = self.gateway.tiers.get(rt.router.state.candidate)
            labels = getattr(tier, "labels", None) if getattr(tier, "kind", "") == "classifier" else None
            rt.labels = list(labels) if labels else None
        rt.window = await asyncio.to_thread(rebuild_window, self.store.engine, rt)
        self._publish(rt)
        await self._ensure_model(rt, rt.router.state)
        self._spawn(rt.router.follow(), track=False)
        if rt.router.opts.shared_window_s > 0:
            self._spawn(self._share(rt), track=False)

    async def _share(self, rt: Runtime) -> None:
        """Every `shared_window_s`, rebuild the gate window from the store and judge it. Gateway processes sharing a
        database each see only their own share of the traffic; the store holds all of it (every scored shadow
        pair and live candidate answer), so each process judges the whole evidence, and a bad candidate is rolled
        back as fast with N replicas as with one. Observations made here after the rebuild's query began are
        added on top (the store may not hold them yet)."""
        while True:
            await asyncio.sleep(rt.router.opts.shared_window_s)
            state, mark = rt.router.state, rt.observed
            if state.stage == ROLLED_BACK or rt.pending:
                continue
            try:
                window = await asyncio.to_thread(rebuild_window, self.store.engine, rt)
            except Exception as exc:  # the store is down: keep judging on this process's own window
                log.warning("rollout %s: cannot rebuild the gate window from the store (%s)", state.workload,
                            type(exc).__name__)
                continue
            now = rt.router.state
            if now.stage != state.stage or now.stage_since != state.stage_since:
                continue  # the stage moved meanwhile: its window started afresh
            for n, obs in rt.recent:
                if n > mark:
                    window.add(obs)
            rt.window = window
            self.judge(rt)

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)

    # -- observer hooks (on the event loop; must stay cheap) ------------------------------------------------
    def on_record(self, rec: dict[str, Any]) -> None:
        rt = self.runtimes.get(rec.get("workload", ""))
        if rt is None or rec.get("role") != "primary":
            return
        obs = served_observation(rt, rec)
        if obs is not None:
            self._observe(rt, obs)

    def on_shadow(self, primary: dict[str, Any], shadow: dict[str, Any]) -> None:
        rt = self.runtimes.get(primary.get("workload", ""))
        if rt is None:
            return
        obs, note = pair_observation(rt, primary, shadow)
        if obs is None:
            return
        shadow["response"] = {**(shadow.get("response") or {}), "rollout": note}
        self._observe(rt, obs)

    # -- gates and transitions -------------------------------------------------------------------------------
    def _observe(self, rt: Runtime, obs: Observation) -> None:
        rt.observed += 1
        rt.recent.append((rt.observed, obs))
        rt.window.add(obs)
        self.judge(rt)

    def judge(self, rt: Runtime) -> Verdict | None:
        state, opts = rt.router.state, rt.router.opts
        if state.stage == ROLLED_BACK or rt.router.store is None:
            return None
        verdict = evaluate(rt.window, opts.gates, request_path=True)
        rt.last_verdict = verdict
        self._metrics.observe(state.workload, verdict.stats)
        if rt.pending:
            return verdict
        if verdict.action == "rollback" and opts.auto_rollback:
            self._move(rt, state, ROLLED_BACK, "gate failed: " + "; ".join(verdict.reasons), verdict.stats)
        elif verdict.action == "advance" and opts.auto_advance and not state.held and state.stage != FULL:
            target = state.next_stage()
            if target is not None and self.advance_blocker(rt) is None:
                self._move(rt, state, target, "gates passed: " + "; ".join(verdict.reasons), verdict.stats)
        return verdict

    def advance_blocker(self, rt: Runtime) -> str | None:
        """Why passing gates may not advance the stage yet (`gates.advance_hold`, with the monitor's live alarms)."""
        state = rt.router.state
        alarming = sorted({check for observer in self.gateway.observers
                           if callable(getattr(observer, "alarming", None))
                           for check in observer.alarming(state.workload)})
        return advance_hold(rt.router.opts.gates, time.time() - state.stage_since, alarming)

    def _move(self, rt: Runtime, state: RolloutState, target: str, reason: str, stats: dict[str, Any]) -> None:
        rt.pending = True

        async def run() -> None:
            try:
                moved = await asyncio.to_thread(self.store.transition, state.workload, target,
                                                expect_version=state.version, reason=reason, actor="gates",
                                                stats=stats)
                if moved is None:  # another process changed the rollout first: adopt its state
                    await rt.router.refresh()
                else:
                    log.warning("rollout %s: %s -> %s (%s)", state.workload, state.stage, target, reason)
                    self._metrics.transition(state.workload, target, "gates")
                    rt.router.apply(moved)
            except Exception:
                log.exception("rollout %s: transition to %s failed", state.workload, target)
            finally:
                rt.pending = False

        self._spawn(run())

    def _changed(self, rt: Runtime, old: RolloutState, new: RolloutState) -> None:
        if new.stage != old.stage or new.stage_since != old.stage_since:
            rt.window.clear()  # every stage earns its own evidence
        self._publish(rt)
        if new.candidate_model != old.candidate_model:
            self._spawn(self._ensure_model(rt, new))

    def _publish(self, rt: Runtime) -> None:
        self._metrics.stage(rt.router.state)

    def _spawn(self, coro: Coroutine[Any, Any, None], track: bool = True) -> None:
        """Run `coro` in the background; `track`: the gateway waits for it on shutdown (a loop is cancelled)."""
        task = asyncio.get_running_loop().create_task(coro)
        if not track:
            self._loops.add(task)
            task.add_done_callback(self._loops.discard)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        gateway_track = getattr(self.gateway, "track", None)
        if gateway_track is not None:  # the gateway waits for these on shutdown
            gateway_track(task)

    # -- a retrained model for the candidate tier ------------------------------------------------------------------
    async def _ensure_model(self, rt: Runtime, state: RolloutState) -> None:
        """Serve `candidate_model` (set by `tiergate retrain`) from the candidate tier, swapping it in live. One swap
        at a time per workload (at start the stored state's change callback and the start itself both ask), and
        the monitor's checks of the old model's answers start afresh."""
        lock = self._model_locks.setdefault(state.workload, asyncio.Lock())
        async with lock:
            await self._swap_model(rt, state)

    async def _swap_model(self, rt: Runtime, state: RolloutState) -> None:
        name, path = state.candidate, state.candidate_model
        tier = self.gateway.tiers.get(name)
        if not path or tier is None or getattr(tier.config, "model", None) == path:
            return
        if getattr(tier, "kind", None) != "classifier":
            log.warning("rollout %s: candidate tier %s is %s; a retrained model is served by restarting with "
                        "its `model` set to %s", state.workload, name, tier.kind, path)
            return
        from tiergate.tiers.registry import build_tier

        fresh = build_tier(name, tier.config.model_copy(update={"model": path}))
        await fresh.start()
        self.gateway.tiers[name] = fresh
        labels = getattr(fresh, "labels", None)
        if labels and not rt.router.opts.labels and not rt.spec.labels:
            rt.labels = list(labels)
        log.warning("rollout %s: tier %s now serves %s", state.workload, name, path)
        for observer in self.gateway.observers:  # the drift monitor: baselines of the old model's answers go
            if callable(getattr(observer, "model_changed", None)):
                await asyncio.to_thread(observer.model_changed, state.workload, f"tier {name} now serves {path}")
        await asyncio.sleep(1.0)  # let requests already dispatched to the old model finish
        await tier.close()

    def status(self) -> dict[str, Any]:
        out = {}
        for wl, rt in self.runtimes.items():
            verdict = evaluate(rt.window, rt.router.opts.gates)
            blocked = self.advance_blocker(rt) if verdict.action == "advance" else None
            state = rt.router.state
            out[wl] = {**state.to_json(), "window": verdict.stats, "gates": verdict.reasons,
                       "next_action": next_action(state.stage, state.held, verdict, blocked), "task": rt.task,
                       **({"advance_blocked": blocked} if blocked else {})}
        return out


class _RolloutMetrics:
    """Prometheus gauges and counters of rollouts, in the gateway's registry (none without one)."""

    def __init__(self, registry: Any) -> None:
        self.enabled = registry is not None
        if not self.enabled:
            return
        from prometheus_client import Counter, Gauge

        self.percent = Gauge("tiergate_rollout_candidate_percent", "Share of live traffic the candidate answers",
                             ["workload"], registry=registry)
        self.agreement = Gauge("tiergate_rollout_agreement", "Candidate agreement in the current stage's window",
                               ["workload"], registry=registry)
        self.compared = Gauge("tiergate_rollout_compared", "Pairs compared in the current stage's window",
                              ["workload"], registry=registry)
        self.transitions = Counter("tiergate_rollout_transitions", "Rollout stage changes made by this process",
                                   ["workload", "to_stage", "actor"], registry=registry)

    def stage(self, state: RolloutState) -> None:
        if self.enabled:
            self.percent.labels(state.workload).set(state.percent)

    def observe(self, workload: str, stats: dict[str, Any]) -> None:
        if self.enabled:
            self.compared.labels(workload).set(stats["compared"])
            if stats["agreement"] is not None:
                self.agreement.labels(workload).set(stats["agreement"])

    def transition(self, workload: str, to_stage: str, actor: str) -> None:
        if self.enabled:
            self.transitions.labels(workload, to_stage, actor).inc()


def attach(app_or_gateway: Any, *, specs: dict[str, CheckSpec] | None = None) -> RolloutManager:
    """The gateway's rollout manager, created and joined to `gateway.observers` on first call (idempotent)."""
    gateway = getattr(getattr(app_or_gateway, "state", None), "gateway", app_or_gateway)
    for obs in gateway.observers:
        if isinstance(obs, RolloutManager):
            return obs
    if specs is None:
        monitor = getattr(gateway.config, "monitor", None)
        specs = dict(getattr(monitor, "workloads", None) or {})
    manager = RolloutManager(gateway, RolloutStore(gateway.engine), specs)
    gateway.observers.append(manager)
    if hasattr(app_or_gateway, "state"):
        app_or_gateway.state.rollout = manager
    return manager

