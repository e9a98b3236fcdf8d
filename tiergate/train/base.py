"""The trainer interface: one method, a typed config, a plain return value.

    trainer = get_trainer("classifier")                          # tiergate.train.registry
    config = trainer.make_config({"epochs": 3})                 # validated dataclass, help text on each field
    model = trainer.train(train_ds, eval_ds, "out/triage", config)
    model.path, model.metrics["accuracy"], model.manifest["version"]

A trainer writes a self-contained artifact directory with a `tiergate-model.json` manifest (see
`tiergate.train.manifest`), resumes from the checkpoints it leaves in `out_dir/checkpoints/`, and is
deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from tiergate.data.dataset import Dataset, Task
from tiergate.errors import ConfigError


@dataclass
class TrainedModel:
    """What a trainer hands back: where the artifact is and how it scored on the evaluation data."""

    path: Path
    kind: str
    task: Task
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C")


class Trainer(ABC, Generic[C]):
    """Subclasses set `name`, `tasks`, `config_class` (a dataclass) and implement `train`."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[Task, ...]]
    config_class: ClassVar[type[Any]]

    def make_config(self, values: dict[str, Any] | None = None) -> C:
        """Build the config from plain values (CLI `--set key=value`, YAML); unknown keys are an error."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{self.name} trainer: unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        try:
            return self.config_class(**{k: _coerce(known[k], v) for k, v in values.items()})  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{self.name} trainer: {exc}") from exc

    def check_task(self, dataset: Dataset) -> None:
        if dataset.task not in self.tasks:
            raise ConfigError(f"the {self.name} trainer handles {', '.join(self.tasks)} data, "
                              f"not {dataset.task} ({dataset.path})")

    @abstractmethod
    def train(self, train_ds: Dataset, eval_ds: Dataset | None, out_dir: str | Path, config: C) -> TrainedModel:
        """Train on `train_ds`, evaluate and calibrate on `eval_ds` (or a split carved from `train_ds`),
        write the artifact to `out_dir` and return it."""


def finish_model_dir(out: Path, *, kind: str, tier_kind: str, task: Task, config: Any, data_hash: str,
                     eval_ds: Dataset | None, metrics: dict[str, Any], clean_checkpoints: bool = False,
                     manifest_skips: tuple[str, ...] = ("history",),
                     manifest_extra: dict[str, Any] | None = None) -> TrainedModel:
    """The last step of every trainer: write metrics.json and the manifest (kind, tier kind, task, base model,
    data hashes, config, metrics less `manifest_skips`, and the trainer's own `manifest_extra`), drop the
    checkpoints when asked, make it readable as a plain write would (the umask's permissions), return the model."""
    import json

    from tiergate.train.manifest import new_manifest, write_manifest

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    manifest = new_manifest(
        kind=kind, tier_kind=tier_kind, task=task, base_model=config.base_model, data_hash=data_hash,
        eval_data_hash=eval_ds.data_hash() if eval_ds is not None else None, config=config.to_json(),
        metrics={k: v for k, v in metrics.items() if k not in manifest_skips})
    manifest.update(manifest_extra or {})
    write_manifest(out, manifest)
    if clean_checkpoints:
        from tiergate.train.checkpoint import remove_checkpoints

        remove_checkpoints(out)
    from tiergate.tiers.hf import share_readable

    share_readable(out)  # safetensors writes 0600: a gateway or vLLM running as another user could not load it
    return TrainedModel(path=out, kind=kind, task=task, metrics=metrics, manifest=manifest)


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Strings from the command line become the field's type (int, float, bool, None)."""
    if not isinstance(value, str):
        return value
    kind = str(f.type)
    low = value.strip().lower()
    if low in ("none", "null") and "None" in kind:
        return None
    if kind.startswith("bool"):
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{f.name}: expected true or false, got {value!r}")
    for typ in (int, float):
        if kind.startswith(typ.__name__):
            try:
                return typ(value)
            except ValueError:
                raise ValueError(f"{f.name}: expected {typ.__name__}, got {value!r}") from None
    return value


def config_help(config_class: type[Any]) -> list[tuple[str, str, Any]]:
    """(name, help, default) for each field of a trainer config, for `tiergate train --help-config`."""
    out = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, str(f.metadata.get("help", "")), default))
    return out
