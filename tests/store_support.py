"""A capture store with given records beside a config file, for tests of what reads the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record


def seed_store(url: str, rows: list[dict[str, Any]], config_dir: Path, config_text: str) -> tuple[str, Path]:
    """Insert `rows` into the store at `url` and write `config_text` as config_dir/tiergate.yaml: (url, config)."""
    engine = open_store(url)
    assert insert_records(engine, [normalize_record(r) for r in rows]) == len(rows)
    engine.dispose()
    cfg = config_dir / "tiergate.yaml"
    cfg.write_text(config_text)
    return url, cfg
