"""The routing policy: guards (privacy) -> explicit model -> the workload's routers in order -> the default tier.

A router whose class sets `guard = True` decides before everything else wherever it is listed: the privacy
guard's promise (never an external tier) must hold against an explicit model pin and any earlier router.

    routing = Routing.from_config(config)
    decision = await routing.route(RouteRequest(body, workload="support-triage"))
"""

from __future__ import annotations

from pydantic import ValidationError

from tiergate.config import Config, RouterSpec, format_validation_error
from tiergate.errors import ConfigError, NotFound, TiergateError
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RoutingContext
from tiergate.routing.registry import router_class

AUTO = "auto"


def build_router(spec: RouterSpec, ctx: RoutingContext, where: str) -> Router:
    """A router from its config entry at `where` (e.g. workloads.triage.policy[0]); every error names `where`."""
    try:
        cls = router_class(spec.kind)
        raw = spec.model_dump(exclude={"kind"})
        try:
            options = cls.Options.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where)) from exc
        for name in _tier_refs(options):
            if name not in ctx.tiers:
                raise ConfigError(f"{where}: unknown tier {name!r}")
        return cls(options, ctx)  # routers with artifacts check them here (light reads; the load is at start)
    except TiergateError as exc:
        if exc.message.startswith(where) or exc.message.startswith("workloads."):
            raise
        raise ConfigError(f"{where}: {exc.message}") from exc


def _tier_refs(options: object) -> list[str]:
    refs: list[str] = []
    for field in ("tier", "small", "large", "escalate_to", "on_prem_tier"):
        v = getattr(options, field, None)
        if isinstance(v, str):
            refs.append(v)
    weights = getattr(options, "weights", None)
    if isinstance(weights, dict):
        refs.extend(weights)
    return refs


class WorkloadPolicy:
    def __init__(self, workload: str, routers: list[Router]) -> None:
        self.workload = workload
        self.routers = routers
        # guards (the privacy router) decide before anything else, an explicit model pin included
        self.guards = [r for r in routers if getattr(r, "guard", False)]

    async def guard(self, req: RouteRequest) -> RouteDecision | None:
        for router in self.guards:
            decision = await router.adecide(req)
            if decision is not None:
                return decision
        return None

    async def decide(self, req: RouteRequest) -> RouteDecision | None:
        for router in self.routers:
            decision = await router.adecide(req)
            if decision is not None:
                return decision
        return None


class Routing:
    def __init__(self, config: Config, policies: dict[str, WorkloadPolicy], default_policy: WorkloadPolicy | None,
                 model_map: dict[str, str]) -> None:
        self.config = config
        self.policies = policies
        self.default_policy = default_policy
        self.model_map = model_map
        assert config.routing.default_tier is not None
        self.default = RouteDecision(config.routing.default_tier, "default")

    @classmethod
    def from_config(cls, config: Config, *, extra_models: dict[str, str] | None = None,
                    base_dir: str | None = None) -> Routing:
        """`base_dir`: where relative router paths are read from (default: the config file's directory)."""
        base_dir = base_dir if base_dir is not None else config.base_dir
        policies: dict[str, WorkloadPolicy] = {}
        for wname, wl in config.workloads.items():
            ctx = RoutingContext(tiers=dict(config.tiers), workload=wname, base_dir=base_dir)
            routers = [build_router(spec, ctx, f"workloads.{wname}.policy[{i}]")
                       for i, spec in enumerate(wl.policy)]
            if wl.tier is not None:
                routers.append(build_router(RouterSpec(kind="static", tier=wl.tier), ctx, f"workloads.{wname}.tier"))
            policies[wname] = WorkloadPolicy(wname, routers)
        # model name -> tier name or 'auto'; tier names and tier model ids map to themselves unless pinning is off
        model_map: dict[str, str] = {}
        if config.routing.pin_tiers:
            for name in config.tiers:
                model_map[name] = name
            for model, tier in (extra_models or {}).items():
                model_map.setdefault(model, tier)
        model_map.update(config.models)
        return cls(config, policies, policies.get(config.routing.default_workload), model_map)

    def routers(self) -> list[Router]:
        return [r for p in self.policies.values() for r in p.routers]

    def resolve_model(self, model: str | None) -> str | None:
        """The tier a model name pins, None for 'auto' routing; NotFound for unknown names."""
        if model is None or model == AUTO:
            return None
        target = self.model_map.get(model)
        if target is None:
            known = ", ".join(sorted(self.model_map))
            raise NotFound(f"The model `{model}` does not exist on this gateway. Known models: {known}",
                           param="model", code="model_not_found")
        return None if target == AUTO else target

    async def route(self, req: RouteRequest) -> RouteDecision:
        pinned = self.resolve_model(req.model)  # an unknown model is a 404 even for guarded requests
        policy = self.policies.get(req.workload, self.default_policy)
        if policy is not None and policy.guards:
            guarded = await policy.guard(req)
            if guarded is not None:
                return guarded
        if pinned is not None:
            return RouteDecision(pinned, "model")
        if policy is not None:
            decision = await policy.decide(req)
            if decision is not None:
                return decision
        return self.default
