"""The TCO scenario file: one workload's volume and tokens, and two or more paths that could serve it.

    scenario = load_scenario("examples/tco/document-classification.yaml")

Every cost component is optional and defaults to zero, so a scenario states only what it knows; a money
field that is uncertain may be a `[low, high]` range (the model runs on the midpoint and reports the range).
Errors name the file and the key: ``doc.yaml: paths.small.infrastructure.instances: Input should be ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tiergate.costs._files import read_yaml_mapping, validate


def _check_range(v: float | tuple[float, float]) -> float | tuple[float, float]:
    if isinstance(v, tuple):
        lo, hi = v
        if lo < 0 or hi < lo:
            raise ValueError("a range is [low, high] with 0 <= low <= high")
    elif v < 0:
        raise ValueError("must be >= 0")
    return v


Amount = Annotated[float | tuple[float, float], AfterValidator(_check_range)]
"""USD amount: a number, or a [low, high] range."""

Pick = Literal["mid", "lo", "hi"]


def pick(amount: float | tuple[float, float], which: Pick = "mid") -> float:
    if not isinstance(amount, tuple):
        return float(amount)
    lo, hi = amount
    return {"lo": lo, "hi": hi, "mid": (lo + hi) / 2.0}[which]


def has_range(amount: float | tuple[float, float] | None) -> bool:
    return isinstance(amount, tuple) and amount[0] != amount[1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf and .nan are no amounts


MAX_REQUESTS_PER_MONTH = 1e15
"""About 380 million requests a second: beyond it a volume is a typo, and the dollar figures lose all meaning."""
MAX_TOKENS_PER_REQUEST = 1e9


class VolumeSpec(_Strict):
    requests_per_month: float = Field(gt=0, le=MAX_REQUESTS_PER_MONTH,
                                      description="requests (documents, conversations) in the first month")
    growth_pct_per_month: float = Field(0.0, ge=-50, le=100, description="compound monthly volume growth, percent")
    peak_to_average: float = Field(1.0, ge=1, description="peak request rate / average rate, for sizing instances")


class TokensSpec(_Strict):
    input_per_request: float = Field(ge=0, le=MAX_TOKENS_PER_REQUEST, description="prompt tokens per request")
    output_per_request: float = Field(ge=0, le=MAX_TOKENS_PER_REQUEST, description="completion tokens per request")


class InferenceSpec(_Strict):
    model: str | None = Field(None, description="price-book model; its token prices unless set below")
    input_per_mtok: float | None = Field(None, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float | None = Field(None, ge=0, description="USD per million completion tokens")
    per_request_usd: float = Field(0.0, ge=0, description="fixed USD per request")
    input_tokens_per_request: float | None = Field(
        None, ge=0, le=MAX_TOKENS_PER_REQUEST,
        description="this path's prompt size when it differs (a fine-tuned model needs no few-shot examples)")
    output_tokens_per_request: float | None = Field(None, ge=0, le=MAX_TOKENS_PER_REQUEST,
                                                    description="this path's completion size when it differs")
    escalate_to: str | None = Field(None, description="path that answers the escalated share (a cascade)")
    escalation_share: float = Field(0.0, ge=0, le=1, description="share of requests escalated to escalate_to")


class InfrastructureSpec(_Strict):
    instance: str | None = Field(None, description="price-book instance preset, e.g. a10g, l4, cpu-small")
    hourly_usd: float | None = Field(None, gt=0, description="USD per instance-hour (instead of the preset's)")
    monthly_usd_per_instance: float | None = Field(None, gt=0, description="USD per instance-month (instead of hourly)")
    instances: int | None = Field(None, ge=1, description="fixed number of instances (redundancy included)")
    throughput_rps_per_instance: float | None = Field(
        None, gt=0, description="measured requests/s of one instance; sizes the fleet to each month's volume")
    target_utilisation: float = Field(0.7, gt=0, le=1, description="share of measured throughput to plan for")
    redundancy: int = Field(0, ge=0, description="spare instances on top of what the volume needs (N+k)")
    min_instances: int = Field(1, ge=1, description="instances serving even at the lowest volume")

    @model_validator(mode="after")
    def _complete(self) -> InfrastructureSpec:
        if self.instance is None and self.hourly_usd is None and self.monthly_usd_per_instance is None:
            raise ValueError("give instance, hourly_usd or monthly_usd_per_instance")
        if self.hourly_usd is not None and self.monthly_usd_per_instance is not None:
            raise ValueError("give hourly_usd or monthly_usd_per_instance, not both")
        if (self.instances is None) == (self.throughput_rps_per_instance is None):
            raise ValueError("give instances (a fixed fleet) or throughput_rps_per_instance (sized to volume)")
        return self


class LabourSpec(_Strict):
    hours_per_month: float = Field(0.0, ge=0, description="hours of work a month")
    hourly_rate_usd: float = Field(0.0, ge=0, description="loaded USD per hour")


class FineTuningSpec(_Strict):
    one_time_usd: Amount = Field(0.0, description="flat cost of the first fine-tune")
    gpu_hours: float = Field(0.0, ge=0, description="GPU hours of training")
    gpu_hourly_usd: float | None = Field(None, ge=0, description="USD per GPU hour (or gpu_instance)")
    gpu_instance: str | None = Field(None, description="price-book instance preset for training")
    training_tokens: float = Field(0.0, ge=0, description="managed fine-tuning: tokens in the training set")
    epochs: float = Field(1.0, gt=0, description="passes over the training set")
    training_per_mtok: float | None = Field(
        None, ge=0, description="USD per million training tokens (default: the inference model's book price)")

    @model_validator(mode="after")
    def _gpu_price(self) -> FineTuningSpec:
        if self.gpu_hours and self.gpu_hourly_usd is None and self.gpu_instance is None:
            raise ValueError("gpu_hours needs gpu_hourly_usd or gpu_instance")
        return self


class DataPreparationSpec(_Strict):
    labelled_examples: int = Field(0, ge=0, description="examples to label before the first fine-tune")
    price_per_example_usd: Amount = Field(0.0, description="annotation price per example")
    fixed_usd: Amount = Field(0.0, description="guidelines, tooling and review")


class RetrainingSpec(_Strict):
    every_months: int = Field(ge=1, description="retrain this often (the first fine-tune is month 1)")
    cost_usd: Amount | None = Field(None, description="cost of each retrain (default: the fine-tuning cost)")
    new_examples: int = Field(0, ge=0, description="examples labelled for each retrain, at the data-preparation price")


class PathSpec(_Strict):
    label: str = Field("", description="name shown in reports")
    kind: Literal["api", "self_hosted", "managed_fine_tune"] = Field("api", description="how the path is served")
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    infrastructure: InfrastructureSpec | None = None
    evaluation_maintenance_monthly_usd: Amount = Field(0.0, description="evaluation runs and model upkeep")
    prompt_maintenance: LabourSpec = Field(default_factory=LabourSpec, description="labour of keeping prompts working")
    fixed_monthly_usd: dict[str, Amount] = Field(default_factory=dict, description="other monthly costs by name")
    fine_tuning: FineTuningSpec | None = None
    data_preparation: DataPreparationSpec | None = None
    retraining: RetrainingSpec | None = None
    one_time_usd: dict[str, Amount] = Field(default_factory=dict, description="other one-time costs by name")


class SensitivitySpec(_Strict):
    changes_pct: list[float] = Field([-50.0, 50.0], min_length=1, description="changes applied to each input")

    @model_validator(mode="after")
    def _above_minus_100(self) -> SensitivitySpec:
        if any(c <= -100 or c > 10_000 for c in self.changes_pct):
            raise ValueError("changes_pct: each change must be above -100 and at most 10000 (percent)")
        return self


class CurveSpec(_Strict):
    min_volume: float | None = Field(None, gt=0, description="lowest monthly volume (default: volume / 100)")
    max_volume: float | None = Field(None, gt=0, description="highest monthly volume (default: volume x 10)")
    points: int = Field(60, ge=2, le=1000)


class Scenario(_Strict):
    name: str = Field(description="short name of the workload")
    description: str = ""
    source: str = Field("", description="where the numbers come from")
    horizon_months: int = Field(36, ge=1, le=120, description="months the TCO covers")
    pricebook: str | None = Field(None, description="price-book override, relative to the scenario file")
    volume: VolumeSpec
    tokens: TokensSpec
    paths: dict[str, PathSpec] = Field(min_length=2, description="ways to serve the workload")
    baseline: str | None = Field(None, description="path savings are measured against (default: the first)")
    candidate: str | None = Field(None, description="path proposed instead (default: the second)")
    sensitivity: SensitivitySpec = Field(default_factory=SensitivitySpec)
    curve: CurveSpec = Field(default_factory=CurveSpec)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names = list(self.paths)
        if self.baseline is None:
            self.baseline = names[0]
        elif self.baseline not in self.paths:
            raise ValueError(f"baseline: unknown path {self.baseline!r}")
        if self.candidate is None:
            self.candidate = next(n for n in names if n != self.baseline)
        elif self.candidate not in self.paths:
            raise ValueError(f"candidate: unknown path {self.candidate!r}")
        if self.candidate == self.baseline:
            raise ValueError("candidate: must differ from baseline")
        for name, path in self.paths.items():
            target = path.inference.escalate_to
            if target is not None and (target not in self.paths or target == name):
                raise ValueError(f"paths.{name}.inference.escalate_to: must name another path")
            if path.inference.escalation_share and target is None:
                raise ValueError(f"paths.{name}.inference.escalation_share: needs escalate_to")
            if target is not None and self.paths[target].inference.escalate_to is not None:
                raise ValueError(f"paths.{name}.inference.escalate_to: {target!r} escalates itself; chains are not modelled")
        if self.curve.min_volume and self.curve.max_volume and self.curve.min_volume >= self.curve.max_volume:
            raise ValueError("curve.max_volume: must be above curve.min_volume")
        return self


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file; a relative `pricebook:` is resolved against the file's folder."""
    data = read_yaml_mapping(path, "scenario")
    scenario = validate(Scenario, data, str(path))
    if scenario.pricebook and not os.path.isabs(scenario.pricebook):
        scenario.pricebook = str((Path(path).parent / scenario.pricebook).resolve())
    return scenario
