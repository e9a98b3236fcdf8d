"""Training checkpoints: model, optimizer, scheduler and RNG state after a given step, written atomically to
`OUT/checkpoints/step-NNNNNNNN/`, so an interrupted training continues exactly where it stopped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tiergate.errors import ConfigError

STATE = "state.pt"
META = "checkpoint.json"


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / META).is_file())
    return done[-1] if done else None


def save_checkpoint(out_dir: Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> Path:
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / STATE)
    (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2, default=str) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(0, len(older) + 1 - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, identity: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint; ConfigError when it was made with other options or data."""
    meta = json.loads((path / META).read_text())
    theirs = meta.get("identity", {})
    diff = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
    if diff:
        raise ConfigError(f"{path} was made with other options or data ({', '.join(diff)} differ); "
                          "delete it, use another --out, or set resume=false")
    state = torch.load(path / STATE, map_location="cpu", weights_only=False)
    return state, meta


def remove_checkpoints(out_dir: Path) -> None:
    shutil.rmtree(checkpoint_root(out_dir), ignore_errors=True)
