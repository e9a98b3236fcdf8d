"""The `tiergate` command. Each area's commands live in their own module with a `register(app)` function;
commands stay thin calls into the library and import heavy modules (torch, transformers) inside the command."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import TextIO

import typer

from tiergate.errors import TiergateError

# Modules that add commands; each defines register(app: typer.Typer) -> None.
_AREAS = [
    "tiergate.cli.gateway",   # serve, keys, logs, config
    "tiergate.cli.costs",     # costs report, tco, advise
    "tiergate.cli.train",     # data, train, eval, compare, models
    "tiergate.cli.router",    # router train, eval, calibrate, boundary
    "tiergate.cli.rollout",   # rollout, monitor, retrain
    "tiergate.cli.analyze",   # analyze (workload discovery)
]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tiergate",
        help="Move narrow LLM workloads from frontier APIs to small models you own.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in _AREAS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # area not built yet
            raise
        mod.register(app)
    return app


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings in the command's own voice: a `warning: ...` line on stderr, not Python's file:line echo."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def main() -> None:
    warnings.showwarning = show_warning
    app = build_app()
    try:
        app(standalone_mode=False)
    except TiergateError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        # typer >= 0.29 raises its own copy of click's exceptions (typer._click), not click's
        typer_click = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if isinstance(exc, click.ClickException | typer_click):
            exc.show()
            sys.exit(exc.exit_code)
        raise
