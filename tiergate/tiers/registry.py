"""Tier kinds -> classes. Built-in kinds register by import path so nothing heavy loads until a tier of
that kind is built (the local tiers import torch)."""

from __future__ import annotations

import importlib
from typing import Any

from tiergate.errors import ConfigError
from tiergate.tiers.base import Tier

_KINDS: dict[str, str | type[Tier]] = {
    "upstream": "tiergate.tiers.upstream:UpstreamTier",
    "local_lm": "tiergate.tiers.local_lm:LocalLMTier",
    "classifier": "tiergate.tiers.classifier:ClassifierTier",
    "extractor": "tiergate.tiers.extractor:ExtractorTier",
}


def register_tier(kind: str, cls: str | type[Tier]) -> None:
    """Register a tier kind: a Tier subclass or a 'module:Class' path imported on first use."""
    _KINDS[kind] = cls


def unregister_tier(kind: str) -> None:
    _KINDS.pop(kind, None)


def tier_class(kind: str) -> type[Tier]:
    try:
        target = _KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown tier kind {kind!r}; known: {', '.join(sorted(_KINDS))}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _KINDS[kind] = target
    return target


def build_tier(name: str, config: Any) -> Tier:
    return tier_class(config.kind)(name, config)
