"""The model registry: every trained model gets a name and a version, with its data hash, config, metrics
and artifact path, in one JSON index.

    registry = ModelRegistry()                    # $TIERGATE_MODELS_DIR, else ~/.tiergate/models
    record = registry.register("out/triage", name="triage")   # -> triage v1, v2, ...
    registry.get("triage")        # latest version;  registry.get("triage:2") or "triage:v2" for one version
    registry.list()

The index (`index.json` in the registry directory) records where artifacts are; it does not copy them.
Writes take a file lock and replace the index atomically, so concurrent trainings do not lose entries.
The index will move to the store; the `ModelRegistry` interface stays.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiergate.errors import ConfigError, DataError, NotFound
from tiergate.train.base import TrainedModel
from tiergate.train.manifest import read_manifest, write_json_atomic, write_manifest

ENV_VAR = "TIERGATE_MODELS_DIR"


def default_registry_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".tiergate" / "models"


@dataclass
class ModelRecord:
    name: str
    version: int
    kind: str
    task: str
    path: str
    base_model: str | None = None
    data_hash: str | None = None
    id: str | None = None
    created_at: str | None = None
    registered_at: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ModelRegistry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_registry_dir()
        self.index_path = self.root / "index.json"

    def check_writable(self) -> None:
        """Refuse, before a training run, a registry directory the model could not be registered in."""
        import tempfile

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"model registry {self.root} (${ENV_VAR}): cannot write there "
                              f"({exc.strerror or exc}); set {ENV_VAR} or pass --no-register") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[dict[str, Any]]:
        if not self.index_path.is_file():
            return []
        try:
            data = json.loads(self.index_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed model index ({exc.msg})", path=str(self.index_path), line=exc.lineno) from exc
        return list(data.get("models", []))

    def register(self, model: TrainedModel | str | Path, name: str | None = None) -> ModelRecord:
        """Record an artifact directory under `name` (default: the directory's name) as its next version,
        and write the name and version into its manifest."""
        path = Path(model.path if isinstance(model, TrainedModel) else model).resolve()
        manifest = read_manifest(path)
        name = name or manifest.get("name") or path.name
        with self._locked():
            entries = self._read()
            version = 1 + max((e["version"] for e in entries if e["name"] == name), default=0)
            record = ModelRecord(
                name=name, version=version, kind=manifest["kind"], task=manifest.get("task", ""), path=str(path),
                base_model=manifest.get("base_model"), data_hash=manifest.get("data_hash"), id=manifest.get("id"),
                created_at=manifest.get("created_at"), registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
                config=manifest.get("config", {}), metrics=manifest.get("metrics", {}),
            )
            entries.append(record.to_json())
            write_json_atomic(self.index_path, {"format": 1, "models": entries})
        manifest.update(name=name, version=version)
        write_manifest(path, manifest)
        return record

    def list(self, name: str | None = None) -> list[ModelRecord]:
        records = [ModelRecord(**e) for e in self._read()]
        if name is not None:
            records = [r for r in records if r.name == name]
        return sorted(records, key=lambda r: (r.name, r.version))

    def get(self, ref: str) -> ModelRecord:
        """`name` (latest version), `name:N` or `name:vN`."""
        name, _, ver = ref.partition(":")
        records = self.list(name)
        if not records:
            raise NotFound(f"no model named {name!r} in {self.index_path}")
        if not ver:
            return records[-1]
        try:
            version = int(ver.removeprefix("v"))
        except ValueError:
            raise NotFound(f"bad model version {ver!r} (want N or vN)") from None
        for r in records:
            if r.version == version:
                return r
        raise NotFound(f"model {name!r} has no version {version}; versions: "
                       f"{', '.join(str(r.version) for r in records)}")
