"""Router kinds -> classes, imported on first use (embedding routers load torch)."""

from __future__ import annotations

import importlib

from tiergate.errors import ConfigError
from tiergate.routing.base import Router

_KINDS: dict[str, str | type[Router]] = {
    "static": "tiergate.routing.static:StaticRouter",
    "split": "tiergate.routing.static:SplitRouter",
    "rollout": "tiergate.rollout.router:RolloutRouter",
    "privacy": "tiergate.routing.privacy:PrivacyRouter",
    "rules": "tiergate.routing.rules:RulesRouter",
    "boundary": "tiergate.routing.boundary:BoundaryRouter",
    "cascade": "tiergate.routing.cascade:CascadeRouter",
    "learned": "tiergate.routing.learned:LearnedRouter",
}


def register_router(kind: str, cls: str | type[Router]) -> None:
    _KINDS[kind] = cls


def router_kinds() -> list[str]:
    return sorted(_KINDS)


def router_class(kind: str) -> type[Router]:
    try:
        target = _KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown router kind {kind!r}; known: {', '.join(router_kinds())}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _KINDS[kind] = target
    return target
