"""Trainer names -> trainer classes. Built-in trainers register by import path, so torch loads only when a
trainer is asked for; plugins call `register_trainer(name, cls_or_path)`."""

from __future__ import annotations

import importlib
from typing import Any

from tiergate.errors import ConfigError
from tiergate.train.base import Trainer

_TRAINERS: dict[str, str | type[Trainer[Any]]] = {}


def register_trainer(name: str, cls: str | type[Trainer[Any]]) -> None:
    """Register a trainer: a Trainer subclass, or a 'module:Class' path imported on first use."""
    _TRAINERS[name] = cls


def unregister_trainer(name: str) -> None:
    _TRAINERS.pop(name, None)


def trainer_names() -> list[str]:
    return sorted(_TRAINERS)


def get_trainer(name: str) -> Trainer[Any]:
    try:
        target = _TRAINERS[name]
    except KeyError:
        raise ConfigError(f"unknown trainer {name!r}; known: {', '.join(trainer_names())}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _TRAINERS[name] = target
    return target()


register_trainer("classifier", "tiergate.train.classifier:ClassifierTrainer")
register_trainer("extractor", "tiergate.train.extractor:ExtractorTrainer")
register_trainer("lora", "tiergate.train.lora:LoraTrainer")
