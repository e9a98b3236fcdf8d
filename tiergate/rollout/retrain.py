"""Retraining from recent traffic: dataset from frontier answers -> candidate -> regression check -> shadow.

    report = retrain(engine, config, "support-triage", RetrainOptions(out="models/triage-r2"))
    report.accepted, report.candidate_metrics["accuracy"], report.current_metrics["accuracy"]

1. Dataset: the workload's recent requests answered or verified by the frontier tier (the rollout's primary by
   default): primary answers, shadow answers and verifications, the latest answer per input. Classification
   answers are mapped to the label set (answers outside it are dropped).
2. A candidate is trained with the `classifier` trainer on a stratified train split.
3. Regression evaluation: the candidate and the current model (the rollout's candidate model, else the
   candidate tier's) are scored by the evaluation harness on the same held-out split of fresh traffic.
4. Only when the candidate is not worse (its accuracy >= the current one's + `margin`) is it registered and a
   new shadow rollout started for it; gateways swap the candidate tier to the new model within `refresh_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from tiergate.data.dataset import Dataset, Example, input_text
from tiergate.errors import ConfigError, DataError
from tiergate.evaluate.metrics import INVALID, match_label
from tiergate.rollout.inspect import rollout_options
from tiergate.rollout.state import RolloutState, RolloutStore, default_stages


class RetrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str | None = Field(None, description="artifact directory (default models/<workload>-<timestamp>)")
    frontier: list[str] | None = Field(None, description="tiers whose answers are ground truth (default: the "
                                                         "rollout's primary)")
    since_days: float = Field(30.0, gt=0, description="use traffic from the last this many days")
    limit: int = Field(50000, ge=1, description="most recent answers read")
    min_examples: int = Field(30, ge=2, description="fewer fresh examples than this: no retraining")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fresh traffic held out for the regression check")
    margin: float = Field(0.0, description="the candidate must reach the current accuracy + margin")
    current: str | None = Field(None, description="current model dir (default: the rollout's, else the tier's)")
    trainer: dict[str, Any] = Field(default_factory=dict, description="classifier trainer options")
    register_model: bool = Field(True, description="add the accepted model to the model registry")
    start_rollout: bool = Field(True, description="start a shadow rollout of the accepted model")
    seed: int = 0


@dataclass
class RetrainReport:
    workload: str
    examples: int
    train_examples: int
    test_examples: int
    model_path: str
    accepted: bool
    reason: str
    candidate_metrics: dict[str, Any] = field(default_factory=dict)
    current_metrics: dict[str, Any] | None = None
    current_model: str | None = None
    rollout: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def traffic_dataset(engine: Engine, workload: str, frontier: list[str], *, labels: list[str] | None = None,
                    since: float | None = None, limit: int = 50000) -> Dataset:
    """Examples from the workload's answers by `frontier` tiers (latest answer per input wins)."""
    from tiergate.store.records import iter_records

    latest: dict[str, tuple[float, str]] = {}
    for tier in frontier:
        for rec in iter_records(engine, workload=workload, tier=tier, status="ok", since=since, limit=limit,
                                newest_first=True):
            if rec["role"] not in ("primary", "shadow", "escalated") or not rec.get("messages"):
                continue
            text, answer = input_text(rec["messages"]).strip(), (rec.get("answer") or "").strip()
            if not text or not answer:
                continue
            if labels:
                answer = match_label(answer, labels)
                if answer == INVALID:
                    continue
            if text not in latest or latest[text][0] < rec["created_at"]:
                latest[text] = (rec["created_at"], answer)
    examples = [Example(text, answer, i + 1) for i, (text, (_, answer)) in enumerate(sorted(latest.items()))]
    return Dataset(examples, "classification", path=f"<traffic:{workload}>")


def _current_model(config: Any, state: RolloutState | None, options: RetrainOptions) -> str | None:
    if options.current:
        return options.current
    if state is not None and state.candidate_model:
        return state.candidate_model
    if state is not None:
        tier = config.tiers.get(state.candidate)
        if tier is not None and tier.kind == "classifier":
            return str(tier.model)
    return None


def retrain(engine: Engine, config: Any, workload: str, options: RetrainOptions | None = None) -> RetrainReport:
    from tiergate.data.split import split_dataset
    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier
    from tiergate.train import ModelRegistry, get_trainer

    options = options or RetrainOptions()
    store = RolloutStore(engine)
    ropts = rollout_options(config, workload)
    state = store.get(workload)
    if state is None and ropts is not None:
        state = store.ensure(workload, primary=ropts.primary, candidate=ropts.candidate,
                             stages=default_stages(ropts.canary), actor="retrain")
    if state is None:
        if workload not in config.workloads:
            known = ", ".join(sorted(config.workloads)) or "none"
            raise ConfigError(f"unknown workload {workload!r} (configured: {known}; none has a stored rollout)")
        raise ConfigError(f"workload {workload!r} has no rollout (add a `rollout` router to its policy)")
    task = (ropts.task if ropts else None) or getattr(config.workloads.get(workload), "task", None)
    if task not in (None, "classification"):
        raise ConfigError(f"retrain trains classifiers; workload {workload!r} is a {task} workload")
    frontier = options.frontier or [state.primary]
    unknown = [t for t in frontier if t not in config.tiers]
    if unknown:
        raise ConfigError(f"--frontier {', '.join(unknown)}: unknown tier (configured: "
                          f"{', '.join(sorted(config.tiers))})")
    if options.current and not (Path(options.current) / "labels.json").is_file():
        raise ConfigError(f"--current {options.current}: not a trained classifier (no labels.json)")
    current = _current_model(config, state, options)
    if options.register_model:
        ModelRegistry().check_writable()  # before any work, not after the training
    labels = (ropts.labels if ropts else None) or _model_labels(current)
    since = time.time() - options.since_days * 86400
    ds = traffic_dataset(engine, workload, frontier, labels=labels, since=since, limit=options.limit)
    if len(ds) < options.min_examples:
        raise DataError(f"{workload}: only {len(ds)} answers by {', '.join(frontier)} in the last "
                        f"{options.since_days:g} days; need {options.min_examples} to retrain")
    splits = split_dataset(ds, val=0.0, test=options.test_fraction, seed=options.seed)
    out = options.out or f"models/{workload}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = get_trainer("classifier")
    values = {"progress": False, "seed": options.seed, **options.trainer}
    model = trainer.train(splits.train, None, out, trainer.make_config(values))
    eval_opts = EvalOptions(concurrency=8, keep_predictions=0)
    cand = evaluate_tier(resolve_tier(str(model.path), name="candidate"), splits.test, eval_opts).metrics
    cur = None
    if current is not None and Path(current).exists():
        cur = evaluate_tier(resolve_tier(current, name="current"), splits.test, eval_opts).metrics
    bar = (cur["accuracy"] if cur else 0.0) + options.margin
    accepted = cand["accuracy"] >= bar
    reason = (f"candidate accuracy {cand['accuracy']:.4f} {'>=' if accepted else '<'} "
              f"{'current ' + format(cur['accuracy'], '.4f') if cur else 'no current model'}"
              f"{f' + margin {options.margin:g}' if options.margin else ''} on {len(splits.test)} fresh examples")
    report = RetrainReport(workload, len(ds), len(splits.train), len(splits.test), str(model.path), accepted,
                           reason, _scalars(cand), _scalars(cur) if cur else None, current)
    if accepted:
        if options.register_model:
            ModelRegistry().register(model.path, name=workload)
        if options.start_rollout:
            moved = store.set_candidate_model(workload, str(Path(model.path).resolve()), actor="retrain",
                                              reason="retrained: " + reason)
            report.rollout = moved.to_json()
    return report


def _model_labels(model_dir: str | None) -> list[str] | None:
    if not model_dir:
        return None
    import json

    path = Path(model_dir) / "labels.json"
    if not path.is_file():
        return None
    labels = json.loads(path.read_text())
    return list(labels if isinstance(labels, list) else labels.get("labels", [])) or None


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
