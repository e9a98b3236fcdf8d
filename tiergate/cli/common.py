"""Shared CLI options and helpers."""

from __future__ import annotations

from pathlib import Path

import typer

from tiergate.config import Config, load_config

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config (default: $TIERGATE_CONFIG or embedded defaults)",
                            envvar="TIERGATE_CONFIG")
DbOption = typer.Option(None, "--db", help="store URL, overriding the config (sqlite:///f.db, postgresql://...)")


def get_config(path: Path | None, db: str | None = None) -> Config:
    cfg = load_config(path)
    if db:
        cfg.store.url = db
    return cfg


def open_engine(cfg: Config):  # type: ignore[no-untyped-def]
    from tiergate.store.db import open_store

    return open_store(cfg.store.url)
