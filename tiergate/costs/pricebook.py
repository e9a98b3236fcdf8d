"""The price book: dated list prices of API models, instance presets and self-hosted tiers.

    book = load_pricebook()                          # shipped defaults (tiergate/defaults/pricebook.yaml)
    book = load_pricebook("prices.yaml")             # ... with an override merged field by field
    book.model("gpt-4o-2024-08-06")                  # ModelPrice(name='gpt-4o', input_per_mtok=2.5, ...)
    book.model("my-model")                           # None, and an UnknownPriceWarning: never a silent zero
    book.instance("g5.xlarge").monthly_usd           # 1.006 * 730

Names match case-insensitively, by alias, without a provider prefix ("openai/gpt-4o") and without dated or
versioned suffixes ("-2024-08-06", "-20250514", "-001", "-latest", "-preview-05-20"); an exact entry wins
over a stripped one, so a dated model priced differently can have its own entry.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiergate.costs._files import read_yaml_mapping, validate
from tiergate.errors import ConfigError


class UnknownPriceWarning(UserWarning):
    """A model or instance has no entry in the price book: its cost is unknown (not zero)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf and .nan are no amounts


class ModelEntry(_Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million input (prompt) tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output (completion) tokens")
    cached_input_per_mtok: float | None = Field(None, ge=0, description="USD per million cached input tokens")
    training_per_mtok: float | None = Field(None, ge=0, description="managed fine-tuning: USD per million training tokens")
    provider: str = Field("", description="who sells it")
    aliases: list[str] = Field(default_factory=list, description="other names that mean this model")
    note: str = ""


class InstanceEntry(_Strict):
    hourly_usd: float = Field(gt=0, description="on-demand USD per hour for one instance")
    gpus: int = Field(0, ge=0, description="GPUs in the instance (0: CPU only)")
    gpu: str | None = Field(None, description="GPU type and memory")
    vcpus: int | None = Field(None, ge=1)
    memory_gb: float | None = Field(None, gt=0)
    provider: str = ""
    aliases: list[str] = Field(default_factory=list)
    note: str = ""


class SelfHostedEntry(_Strict):
    instance: str | None = Field(None, description="instance preset name (see instances)")
    hourly_usd: float | None = Field(None, gt=0, description="USD per hour for one instance, instead of a preset")
    instances: int = Field(1, ge=1, description="instances serving this tier")
    throughput_rps: float = Field(gt=0, description="measured requests/s of the whole deployment")
    fixed_monthly_usd: float = Field(0.0, ge=0, description="fixed monthly costs (storage, monitoring, support)")
    aliases: list[str] = Field(default_factory=list)
    note: str = ""

    @model_validator(mode="after")
    def _one_price(self) -> SelfHostedEntry:
        if (self.instance is None) == (self.hourly_usd is None):
            raise ValueError("give exactly one of instance (a preset) or hourly_usd")
        return self


class PriceBookFile(_Strict):
    as_of: date = Field(description="date the prices were taken")
    currency: Literal["USD"] = "USD"
    hours_per_month: float = Field(730.0, gt=0, description="hours billed per month of an always-on instance")
    sources: dict[str, str] = Field(default_factory=dict, description="where the prices come from")
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    instances: dict[str, InstanceEntry] = Field(default_factory=dict)
    self_hosted: dict[str, SelfHostedEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelPrice:
    """What one request to a model costs: token prices (API) or per-request infrastructure (self-hosted)."""

    name: str
    kind: Literal["api", "self_hosted"]
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_request_usd: float = 0.0
    fixed_monthly_usd: float = 0.0
    training_per_mtok: float | None = None
    hourly_usd: float = 0.0
    throughput_rps: float | None = None
    provider: str = ""
    note: str = ""

    def request_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (self.per_request_usd + prompt_tokens * self.input_per_mtok / 1e6
                + completion_tokens * self.output_per_mtok / 1e6)


@dataclass(frozen=True)
class InstancePrice:
    name: str
    hourly_usd: float
    hours_per_month: float
    gpus: int = 0
    gpu: str | None = None
    provider: str = ""
    note: str = ""

    @property
    def monthly_usd(self) -> float:
        return self.hourly_usd * self.hours_per_month


_SUFFIXES = [
    re.compile(p)
    for p in (
        r"-\d{4}-\d{2}-\d{2}$",          # gpt-4o-2024-08-06
        r"[-@]\d{8}$",                   # claude-sonnet-4-20250514, vertex @20241022
        r"-(latest|preview|exp)(-\d{2}-\d{2}|-\d{4})?$",  # -latest, gemini-2.5-flash-preview-05-20
        r"-v\d+(\.\d+)?$",               # claude-3-5-sonnet-v2
        r"-\d{3,4}$",                    # gemini-2.0-flash-001, gpt-3.5-turbo-0125
    )
]


def normalize_name(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def name_candidates(name: str) -> list[str]:
    """Names to try, most specific first: as given, without a provider prefix, then with version suffixes
    stripped one at a time. OpenAI fine-tuned ids ("ft:BASE:org::id") become "ft:BASE" candidates."""
    n = normalize_name(name)
    fine_tuned = n.startswith("ft:")
    if fine_tuned:
        n = n[3:].split(":", 1)[0]
    starts = [n] if "/" not in n else [n, n.rsplit("/", 1)[1]]
    out: list[str] = []
    for start in starts:
        current = start
        while current and current not in out:
            out.append(current)
            for pattern in _SUFFIXES:
                stripped = pattern.sub("", current)
                if stripped != current:
                    current = stripped
                    break
    return ["ft:" + c for c in out] if fine_tuned else out


@dataclass
class PriceBook:
    """Loaded, validated prices; lookups are cached per name."""

    data: PriceBookFile
    source: str = "<shipped>"
    _index: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        sections: list[tuple[str, dict[str, Any]]] = [
            ("models", self.data.models), ("self_hosted", self.data.self_hosted), ("instances", self.data.instances)
        ]
        for section, entries in sections:
            space = "instances" if section == "instances" else "models"
            for key, entry in entries.items():
                for alias in [key, *entry.aliases]:
                    slot = (space, normalize_name(alias))
                    other = self._index.get(slot)
                    if other is not None and other != (section, key):
                        raise ConfigError(f"{self.source}: {section}.{key}: name {alias!r} is also {other[0]}.{other[1]}")
                    self._index[slot] = (section, key)
        for key, sh in self.data.self_hosted.items():
            if sh.instance is not None and self._find("instances", sh.instance) is None:
                raise ConfigError(f"{self.source}: self_hosted.{key}.instance: unknown instance {sh.instance!r}")

    @property
    def as_of(self) -> date:
        return self.data.as_of

    def _find(self, space: str, name: str) -> tuple[str, str] | None:
        for cand in name_candidates(name):
            hit = self._index.get((space, cand))
            if hit is not None:
                return hit
        return None

    def _warn(self, what: str, name: str, space: str, stacklevel: int) -> None:
        names = sorted({k for (s, k) in self._index if s == space})
        close = difflib.get_close_matches(normalize_name(name), names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        warnings.warn(
            UnknownPriceWarning(
                f"{what} {name!r} is not in the price book ({self.source}, as of {self.as_of}): its cost is "
                f"unknown, not zero.{hint} Add it to a price-book override (pricebook: in tiergate.yaml)."
            ),
            stacklevel=stacklevel,
        )

    def model(self, name: str, *, warn: bool = True) -> ModelPrice | None:
        """The price of an API model or a self-hosted tier; None (and a warning) when unknown."""
        key = ("models", name)
        if key not in self._cache:
            self._cache[key] = self._build_model(name)
        price: ModelPrice | None = self._cache[key]
        if price is None and warn:
            self._warn("model", name, "models", stacklevel=3)
        return price

    def _build_model(self, name: str) -> ModelPrice | None:
        hit = self._find("models", name)
        if hit is None:
            return None
        section, key = hit
        if section == "models":
            m = self.data.models[key]
            return ModelPrice(name=key, kind="api", input_per_mtok=m.input_per_mtok, output_per_mtok=m.output_per_mtok,
                              training_per_mtok=m.training_per_mtok, provider=m.provider, note=m.note)
        sh = self.data.self_hosted[key]
        if sh.hourly_usd is not None:
            hourly = sh.hourly_usd
        else:
            preset = self._find("instances", sh.instance or "")
            assert preset is not None  # checked in __post_init__
            hourly = self.data.instances[preset[1]].hourly_usd
        total_hourly = hourly * sh.instances
        return ModelPrice(name=key, kind="self_hosted", per_request_usd=total_hourly / (sh.throughput_rps * 3600.0),
                          fixed_monthly_usd=sh.fixed_monthly_usd, hourly_usd=total_hourly,
                          throughput_rps=sh.throughput_rps, note=sh.note)

    def instance(self, name: str, *, warn: bool = True) -> InstancePrice | None:
        """An instance preset by name or alias ("a10g", "g5.xlarge"); None (and a warning) when unknown."""
        hit = self._find("instances", name)
        if hit is None:
            if warn:
                self._warn("instance", name, "instances", stacklevel=3)
            return None
        e = self.data.instances[hit[1]]
        return InstancePrice(name=hit[1], hourly_usd=e.hourly_usd, hours_per_month=self.data.hours_per_month,
                             gpus=e.gpus, gpu=e.gpu, provider=e.provider, note=e.note)

    def model_names(self) -> list[str]:
        return sorted([*self.data.models, *self.data.self_hosted])

    def instance_names(self) -> list[str]:
        return sorted(self.data.instances)


def shipped_pricebook_data() -> dict[str, Any]:
    import yaml

    text = resources.files("tiergate").joinpath("defaults/pricebook.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def merge_pricebook(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override entries replace base fields one by one; new entries are added; scalars replace."""
    out = dict(base)
    for key, value in override.items():
        if key in ("models", "instances", "self_hosted", "sources") and isinstance(value, dict):
            section = dict(out.get(key) or {})
            for name, entry in value.items():
                old = section.get(name)
                if isinstance(old, dict) and isinstance(entry, dict):
                    if key == "self_hosted" and ("instance" in entry or "hourly_usd" in entry):
                        old = {k: v for k, v in old.items() if k not in ("instance", "hourly_usd")}
                    section[name] = {**old, **entry}
                else:
                    section[name] = entry
            out[key] = section
        else:
            out[key] = value
    return out


def load_pricebook(override: str | os.PathLike[str] | None = None) -> PriceBook:
    """The shipped price book, with `override` (a YAML file of the same shape) merged over it."""
    data = shipped_pricebook_data()
    source = "shipped price book"
    if override is not None:
        extra = read_yaml_mapping(override, "price-book")
        data = merge_pricebook(data, extra)
        source = str(override)
    return PriceBook(validate(PriceBookFile, data, source), source=source)
