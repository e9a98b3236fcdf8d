"""Shared CLI options and helpers: the config and store options, and the checks every command makes before
its long work starts (an output it cannot write is refused first, not after training)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from tiergate.config import Config, load_config
from tiergate.errors import ConfigError

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config (default: $TIERGATE_CONFIG or embedded defaults)",
                            envvar="TIERGATE_CONFIG")
DbOption = typer.Option(None, "--db", help="store URL, overriding the config (sqlite:///f.db, postgresql://...)")


def get_config(path: Path | str | None, db: str | None = None, *, require_secrets: bool = False) -> Config:
    """The config for a command. Tier secrets (`${OPENAI_API_KEY}` ...) are needed only by commands that call
    tiers (serve, eval of a config tier): others pass `require_secrets=False` (the default) and a secret whose
    variable is unset is left unset."""
    cfg = load_config(path, require_secrets=require_secrets)
    if db:
        cfg.store.url = db
    return cfg


def open_engine(cfg: Config, *, create: bool = True):  # type: ignore[no-untyped-def]
    """The store's engine, its schema up to date. Read-only commands pass `create=False`: a SQLite path with no
    database is then an error (a typo should not leave an empty store behind)."""
    from tiergate.store.db import open_store

    return open_store(cfg.store.url, create=create)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_dir(path: str | Path, option: str, *, shown: str | Path | None = None) -> Path:
    """Refuse, before any work, a directory the command could not write into: it is created (the command would
    create it anyway) and a probe file is written and removed, so read-only places (/proc, a full or read-only
    mount, another user's directory) are found too, whoever runs the command."""
    p = Path(path)
    where = f"{option} {shown if shown is not None else p}"
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{where}: {'its directory ' + str(p) if shown is not None else 'it'} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{where}: cannot create it (a parent is a file)") from None
    except NotADirectoryError:
        raise ConfigError(f"{where}: cannot create it (a parent is a file)") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create it ({_reason(exc)})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".tiergate-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write there ({_reason(exc)})") from exc
    return p


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse, before any work, a file the command could not write: a directory, a path under a file, a place
    that is not writable. Its directory is created; an existing file is opened for appending (not changed)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p}: is a directory (give a file name)")
    check_output_dir(p.parent, option, shown=p)
    if p.exists():
        try:
            with open(p, "ab"):
                pass
        except OSError as exc:
            raise ConfigError(f"{option} {p}: cannot write it ({_reason(exc)})") from exc
    return p


def check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise typer.BadParameter(f"{option} must be at least 1, got {value}")


REPORT_WIDTH = 200
"""Width of tables when the output is not a terminal (a file, a pipe, a CI log) and $COLUMNS is unset: rich's
default of 80 columns would cut figures and names short ("$0.001…", "confide…")."""


def console() -> Any:
    """The console commands print to: the terminal's width, or REPORT_WIDTH when writing to a file or pipe."""
    import os

    from rich.console import Console

    out = Console()
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(width=REPORT_WIDTH)
    return out


def warn_unknown_tiers(seen: Any, cfg: Any, config_given: bool) -> None:
    """A `warning:` line when tiers that carried the store's traffic are not in the config the report was given (the
    embedded defaults when no -c): their zone and price are unknown, and an all-on-one-tier counterfactual may be
    of a tier that carried nothing."""
    import typer

    stray = sorted(set(seen) - set(cfg.tiers))
    if stray:
        typer.secho(f"warning: tier(s) {', '.join(stray)} carried traffic but are not in "
                    f"{'the config' if config_given else 'the embedded defaults (no -c given)'}: their zone and "
                    "price are unknown here, so on-prem share and savings leave them out; pass the gateway's own "
                    "config", fg="yellow", err=True)
