"""The advisor's workload profile: the eight dimensions of the decision, from a file or from captured traffic.

    profile = load_profile("examples/advise/support-triage.yaml")
    profile = profile_from_traffic({"requests": 420_000, "days": 7, "cost_usd": 1_310.0, ...},
                                   answers={"ml_capacity": "some"})

Dimensions: volume, task structure, training data, latency, privacy, ML capacity, task stability and the
measured quality gap. Anything not given takes a conservative default and is listed in `assumed()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiergate.costs._files import read_yaml_mapping, validate
from tiergate.costs.scenario import MAX_REQUESTS_PER_MONTH, MAX_TOKENS_PER_REQUEST

DAYS_PER_MONTH = 365.0 / 12.0

TaskStructure = Literal["classification", "extraction", "templated_generation", "open_generation", "complex_reasoning"]
Privacy = Literal["none", "sensitive", "restricted"]
MLCapacity = Literal["none", "some", "team"]
Stability = Literal["stable", "evolving", "volatile"]

# Labelled examples a small model typically needs, by task structure (override: training_data.examples_needed).
EXAMPLES_NEEDED: dict[str, int] = {
    "classification": 1000, "extraction": 2000, "templated_generation": 3000,
    "open_generation": 5000, "complex_reasoning": 10000,
}
# Months between retrains, by task stability.
RETRAIN_EVERY_MONTHS: dict[str, int] = {"stable": 6, "evolving": 3, "volatile": 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf and .nan are no amounts


class VolumeDim(_Strict):
    requests_per_month: float | None = Field(None, gt=0, le=MAX_REQUESTS_PER_MONTH,
                                             description="requests a month (or requests_per_day)")
    requests_per_day: float | None = Field(None, gt=0, le=MAX_REQUESTS_PER_MONTH / DAYS_PER_MONTH,
                                           description="requests a day (or requests_per_month)")
    frontier_monthly_spend_usd: float | None = Field(
        None, ge=0, description="measured frontier spend a month; default: estimated from model and tokens")
    frontier_model: str = Field("gpt-4o", description="frontier model the workload uses now (price-book name)")
    input_tokens_per_request: float = Field(500, ge=0, le=MAX_TOKENS_PER_REQUEST, description="prompt tokens per request")
    output_tokens_per_request: float = Field(50, ge=0, le=MAX_TOKENS_PER_REQUEST,
                                             description="completion tokens per request")

    @model_validator(mode="after")
    def _one_rate(self) -> VolumeDim:
        if (self.requests_per_month is None) == (self.requests_per_day is None):
            raise ValueError("give requests_per_month or requests_per_day (one of them)")
        return self

    @property
    def per_month(self) -> float:
        return self.requests_per_month if self.requests_per_month is not None else (self.requests_per_day or 0) * DAYS_PER_MONTH

    @property
    def per_day(self) -> float:
        return self.per_month / DAYS_PER_MONTH


class TrainingDataDim(_Strict):
    labelled_examples: int = Field(0, ge=0, description="labelled examples at hand (captured answers count)")
    examples_needed: int | None = Field(None, ge=1, description="examples the task needs (default: by task structure)")
    annotation_price_per_example_usd: float | None = Field(None, ge=0, description="price to label one example")
    data_budget_usd: float | None = Field(None, ge=0, description="budget for creating training data")


class LatencyDim(_Strict):
    p95_ms_required: float | None = Field(None, gt=0, description="p95 latency the workload needs (none: no target)")
    frontier_p95_ms: float = Field(1200, gt=0, description="p95 latency of the frontier API for this workload")


class CostAssumptions(_Strict):
    """Costs of the small-model options, for the payback estimate (defaults: the seeds' worked example)."""

    instance: str = Field("a10g", description="price-book instance preset for self-hosting")
    instances: int = Field(2, ge=1, description="instances (redundancy included)")
    instance_monthly_usd: float | None = Field(None, gt=0, description="USD per instance-month (default: preset x 730 h)")
    evaluation_maintenance_monthly_usd: float = Field(500, ge=0, description="evaluation and upkeep a month")
    fine_tune_usd: float = Field(500, ge=0, description="one fine-tuning run, self-hosted")
    setup_usd: float = Field(0, ge=0, description="one-time integration work")
    managed_model: str = Field("ft:gpt-4o-mini", description="price-book model of the managed fine-tuning option")
    managed_epochs: float = Field(3, gt=0, description="epochs of a managed fine-tuning run")


class Thresholds(_Strict):
    volume_per_month: float = Field(500_000, gt=0, description="decision flow: volume worth fine-tuning for")
    workload_spend_usd: float = Field(3_000, ge=0, description="rule of thumb: frontier spend of one workload a month")
    self_host_per_day: float = Field(8_000, gt=0, description="rule of thumb: conversations a day where self-hosting pays")
    self_host_spend_usd: float = Field(500, ge=0, description="rule of thumb: frontier spend a month where self-hosting pays")
    max_quality_gap_pts: float = Field(5.0, ge=0, description="measured gap (points) a small model may trail by")


class Profile(_Strict):
    workload: str = Field("workload", description="name of the workload")
    volume: VolumeDim
    task_structure: TaskStructure = Field("open_generation", description="what the model has to do")
    training_data: TrainingDataDim = Field(default_factory=TrainingDataDim)
    latency: LatencyDim = Field(default_factory=LatencyDim)
    privacy: Privacy = Field("none", description="restricted: data may not leave the company's infrastructure")
    ml_capacity: MLCapacity = Field("none", description="people who can fine-tune, evaluate and serve a model")
    task_stability: Stability = Field("evolving", description="how often the task's labels or format change")
    quality_gap_pts: float | None = Field(
        None, description="measured quality gap: frontier score minus small-model score, in points (none: not measured)")
    costs: CostAssumptions = Field(default_factory=CostAssumptions)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    pricebook: str | None = Field(None, description="price-book override, relative to the profile file")

    def assumed(self) -> list[str]:
        """Dimensions that were not given and took their default."""
        given = self.model_fields_set
        out = [f for f in ("task_structure", "privacy", "ml_capacity", "task_stability", "quality_gap_pts") if f not in given]
        if "training_data" not in given or "labelled_examples" not in self.training_data.model_fields_set:
            out.append("training_data.labelled_examples")
        if self.volume.frontier_monthly_spend_usd is None:
            out.append("volume.frontier_monthly_spend_usd (estimated from model and tokens)")
        return out

    @property
    def examples_needed(self) -> int:
        return self.training_data.examples_needed or EXAMPLES_NEEDED[self.task_structure]


def load_profile(path: str | os.PathLike[str]) -> Profile:
    data = read_yaml_mapping(path, "profile")
    profile = validate(Profile, data, str(path))
    if profile.pricebook and not os.path.isabs(profile.pricebook):
        profile.pricebook = os.path.join(os.path.dirname(os.path.abspath(path)), profile.pricebook)
    return profile


_TASKS = {"classification": "classification", "extraction": "extraction", "generation": "open_generation"}


def profile_from_traffic(stats: Mapping[str, Any], answers: Mapping[str, Any] | None = None,
                         answers_source: str = "<answers>") -> Profile:
    """A profile from captured-traffic statistics, completed by `answers` (the dimensions traffic cannot show:
    ML capacity, task stability, data budget, ...; they win over what traffic suggests).

    `stats` keys (all optional but requests and days): requests, days (length of the window), cost_usd (frontier
    spend in the window), prompt_tokens and completion_tokens (totals), model (the frontier model), workload,
    task ("classification" | "extraction" | "generation", as in the workload config), labelled_examples
    (captured answers usable as training data), private_share (share of requests kept on-prem by the privacy
    router). A bad value is named in `answers_source` (the answers file) when the answers gave it."""
    requests, days = float(stats.get("requests") or 0), float(stats.get("days") or 0)
    if requests <= 0 or days <= 0:
        from tiergate.errors import DataError

        raise DataError("traffic statistics need requests > 0 and days > 0")
    scale = DAYS_PER_MONTH / days
    volume: dict[str, Any] = {"requests_per_month": requests * scale}
    if stats.get("cost_usd") is not None:
        volume["frontier_monthly_spend_usd"] = float(stats["cost_usd"]) * scale
    if stats.get("model"):
        volume["frontier_model"] = str(stats["model"])
    if stats.get("prompt_tokens") is not None:
        volume["input_tokens_per_request"] = float(stats["prompt_tokens"]) / requests
    if stats.get("completion_tokens") is not None:
        volume["output_tokens_per_request"] = float(stats["completion_tokens"]) / requests
    data: dict[str, Any] = {"workload": stats.get("workload") or "workload", "volume": volume}
    if stats.get("task") in _TASKS:
        data["task_structure"] = _TASKS[str(stats["task"])]
    if stats.get("labelled_examples") is not None:
        data["training_data"] = {"labelled_examples": int(stats["labelled_examples"])}
    if float(stats.get("private_share") or 0) > 0:
        data["privacy"] = "restricted"
    for key, value in (answers or {}).items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        from tiergate.config import format_validation_error
        from tiergate.errors import ConfigError

        # one line per error, each naming where its key came from: the answers file or the captured traffic
        lines = format_validation_error(exc, "\0").splitlines()
        given = set(answers or {})
        raise ConfigError("\n".join(
            line.replace("\0", answers_source if err["loc"] and err["loc"][0] in given else "<traffic profile>", 1)
            for err, line in zip(exc.errors(), lines, strict=True))) from exc
