"""The `tiergate` command. Each area's commands live in their own module with a `register(app)` function;
commands stay thin calls into the library and import heavy modules (torch, transformers) inside the command."""

from __future__ import annotations

import importlib
import os
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
    if not sys.stderr.isatty():  # a log or a pipe: no Hugging Face download or weight-loading bars in it
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
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
    except Exception as exc:  # click usage errors, then the last-resort translation
        import click

        # typer >= 0.29 raises its own copy of click's exceptions (typer._click), not click's
        typer_click = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if isinstance(exc, click.ClickException | typer_click):
            exc.show()
            sys.exit(exc.exit_code)
        message = describe_error(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def describe_error(exc: BaseException) -> str | None:
    """A one-line message for an error no command translated itself: files that cannot be read or written,
    text that is not UTF-8, YAML that does not parse, options a library model refused, a database that cannot
    be opened. None for anything else (a bug: its traceback is shown)."""
    import pydantic
    import yaml
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, OSError):
        text = str(exc).strip()
        reason = exc.strerror or (text.splitlines()[0] if text else exc.__class__.__name__)
        return f"{exc.filename}: {reason}" if exc.filename is not None else reason
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}: " if mark is not None else ""
        return f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})"
    if isinstance(exc, pydantic.ValidationError):
        from tiergate.config import format_validation_error

        return format_validation_error(exc, exc.title).replace("\n", "; ")
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return f"store: {orig or str(exc).splitlines()[0]}"
    return None
