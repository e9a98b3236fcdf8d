"""Gateway commands: serve, keys, logs, config."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tiergate.cli.common import ConfigOption, DbOption, console, get_config, open_engine, warn_unknown_tiers
from tiergate.config import Config
from tiergate.errors import ConfigError, TiergateError


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run the OpenAI-compatible gateway.")(serve)
    keys = typer.Typer(help="Gateway API keys (stored hashed).", no_args_is_help=True)
    keys.command("create")(keys_create)
    keys.command("list")(keys_list)
    keys.command("revoke")(keys_revoke)
    app.add_typer(keys, name="keys")
    app.command("logs", help="Query captured records as a table or JSON lines.")(logs_show)
    app.command("dashboard", help="The gateway dashboard as one HTML file (live at /dashboard).")(dashboard)
    store = typer.Typer(help="The capture store.", no_args_is_help=True)
    store.command("migrate")(store_migrate)
    store.command("replay-spill")(logs_replay)
    app.add_typer(store, name="store")
    cfg = typer.Typer(help="Configuration.", no_args_is_help=True)
    cfg.command("check")(config_check)
    app.add_typer(cfg, name="config")


def serve(
    config: Optional[Path] = ConfigOption,
    host: Optional[str] = typer.Option(None, help="bind address (default from config: 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="port (default from config: 8080)"),
    db: Optional[str] = DbOption,
) -> None:
    from tiergate.gateway.server import serve as run

    cfg = get_config(config, db, require_secrets=True)
    check_config_files(cfg)  # as `config check`: a one-line error now, not a traceback from the app's start
    run(cfg, host=host, port=port)


def keys_create(
    name: str = typer.Argument(..., help="a name for the key (who uses it)"),
    workload: list[str] = typer.Option([], "--workload", "-w", help="limit the key to these workloads"),
    config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption,
) -> None:
    """Create a gateway key; the secret is printed once."""
    from tiergate.store.keys import create_key

    if not name.strip():
        raise typer.BadParameter("the key needs a name (who uses it)", param_hint="NAME")
    cfg = get_config(config, db)
    unknown = [w for w in workload if cfg.workloads and w not in cfg.workloads]
    if unknown:
        typer.secho(f"warning: workload(s) {', '.join(map(repr, unknown))} not in the config (workloads: "
                    f"{', '.join(cfg.workloads)}); the key will not be usable for them until they are added",
                    fg=typer.colors.YELLOW, err=True)
    key_id, secret = create_key(open_engine(cfg), name, workload or None)
    console().print(f"created key [bold]{key_id}[/] ({name}); the secret is shown only now:", style="green", highlight=False)
    print(secret)


def keys_list(config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption,
              json_out: bool = typer.Option(False, "--json", help="print JSON lines")) -> None:
    from tiergate.store.keys import list_keys

    rows = list_keys(open_engine(get_config(config, db), create=False))
    if json_out:
        for r in rows:
            print(json.dumps(r))
        return
    t = Table("id", "name", "prefix", "created", "revoked", "workloads")
    for r in rows:
        t.add_row(r["id"], r["name"], r["prefix"] + "…", _ts(r["created_at"]), _ts(r["revoked_at"]),
                  ",".join(r["workloads"] or []) or "all")
    console().print(t)


def keys_revoke(key: str = typer.Argument(..., help="key id or name"),
                config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
    from tiergate.store.keys import revoke_key

    n = revoke_key(open_engine(get_config(config, db), create=False), key)
    console().print(f"revoked {n} key(s) matching {key!r}")


def _ts(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def _unknown(value: float | None, spec: str = "") -> str:
    """A captured number, or '-' when the store has none (not known), never a made-up 0."""
    return "-" if value is None else format(value, spec)


def dashboard(
    html: Path = typer.Option(..., "--html", help="the page to write"),
    since: str = typer.Option("24h", "--since", help="window: 30m, 12h, 7d, 2w, an ISO date, or all"),
    as_json: Optional[Path] = typer.Option(None, "--json", help="also write the figures as JSON"),
    config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption,
) -> None:
    """Write the dashboard the gateway serves at /dashboard (traffic by tier, errors, latency, spend and savings,
    workloads with their rollout stage and drift alarms, route reasons, latest failures) as a snapshot."""
    from tiergate.cli.common import check_output_file
    from tiergate.costs.report import parse_since
    from tiergate.gateway.dashboard import collect, render

    cfg = get_config(config, db)
    check_output_file(html, "--html")
    if as_json is not None:
        check_output_file(as_json, "--json")
    start = parse_since(since) or 0.0
    data = collect(open_engine(cfg, create=False), cfg, since=start)
    html.write_text(render(data), encoding="utf-8")
    if as_json is not None:
        as_json.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    t, n = data["totals"], len(data["workloads"])
    console().print(f"{t['requests']:,} request{'s' * (t['requests'] != 1)} in {n} workload{'s' * (n != 1)}; "
                  f"dashboard: {html}")
    warn_unknown_tiers(data.get("by_tier") or {}, cfg, config is not None)


def logs_show(
    workload: Optional[str] = typer.Option(None, "--workload", "-w"),
    tier: Optional[str] = typer.Option(None, "--tier", "-t"),
    status: Optional[str] = typer.Option(None, "--status", help="ok or error"),
    since: Optional[str] = typer.Option(None, "--since", help="e.g. 30m, 2h, 7d or an ISO date"),
    limit: int = typer.Option(20, "--limit", "-n"),
    jsonl: bool = typer.Option(False, "--jsonl", help="full records as JSON lines"),
    config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption,
) -> None:
    """Show captured records, newest first (a table, or JSON lines with --jsonl)."""
    from tiergate.store.records import query_records

    if status is not None and status not in ("ok", "error"):
        raise typer.BadParameter(f"{status!r}: ok or error", param_hint="--status")
    if limit < 1:
        raise typer.BadParameter(f"must be at least 1, got {limit}", param_hint="--limit")
    from tiergate.costs.report import parse_since

    start = parse_since(since)
    rows = query_records(open_engine(get_config(config, db), create=False), workload=workload, tier=tier,
                         status=status, since=start, limit=limit)
    if jsonl:
        for r in rows:
            sys.stdout.write(json.dumps(r, default=str) + "\n")
        return
    t = Table("time", "workload", "tier", "reason", "status", "tokens", "ms", "cost $", "prompt → answer")
    for r in rows:
        prompt = ""
        if r["messages"]:
            last = r["messages"][-1]
            prompt = last.get("content") if isinstance(last.get("content"), str) else "[parts]"
        summary = f"{(prompt or '')[:40]!s} → {(r['answer'] or r['error'] or '')[:40]}"
        t.add_row(_ts(r["created_at"]), r["workload"], r["tier"] or "-", r["route_reason"] or "-",
                  r["status"] if r["status"] == "ok" else f"[red]{r['status']} {r['http_status']}[/]",
                  f"{_unknown(r['prompt_tokens'])}/{_unknown(r['completion_tokens'])}",
                  _unknown(r["latency_ms"], ".0f"), _unknown(r["cost_usd"], ".6f"), summary.replace("\n", " "))
    console().print(t)


def logs_replay(path: Path = typer.Argument(..., help="spill file written when the store was unavailable"),
                config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
    """Load records kept in a spill file back into the store."""
    from tiergate.store.writer import replay_spill

    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file")
    result = replay_spill(open_engine(get_config(config, db)), str(path))
    typer.echo(f"replayed {result.written} records from {path}"
               + (f"; {result.skipped} already stored, skipped" if result.skipped else ""))
    if result.rejected:
        for line, reason in result.rejected:
            typer.secho(f"{path}:{line}: rejected: {reason}", fg=typer.colors.RED, err=True)
        raise TiergateError(f"{path}: {len(result.rejected)} record(s) rejected; the file is left in place "
                            "(fix or remove those lines and replay it again)")
    typer.echo(f"{path} -> {result.archived_to}")


def store_migrate(config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
    """Create or upgrade the store's schema (the gateway also does this at start)."""
    from tiergate.store.db import create_store_engine, migrate_store

    cfg = get_config(config, db)
    done = migrate_store(create_store_engine(cfg.store.url))
    console().print(f"applied: {', '.join(done) or 'nothing (up to date)'}")


def config_check(config: Optional[Path] = ConfigOption) -> None:
    """Validate a config file (and its routers) without starting anything."""
    from tiergate.routing.policy import Routing

    cfg = get_config(config)
    Routing.from_config(cfg)
    check_config_files(cfg)
    t = Table("tier", "kind", "zone", "model / url", "fallback")
    for name, tier in cfg.tiers.items():
        where = getattr(tier, "base_url", None) or getattr(tier, "model", "")
        t.add_row(name, tier.kind, tier.zone, str(where), tier.fallback or "")
    console().print(t)
    console().print(f"workloads: {', '.join(cfg.workloads) or '(none: default tier ' + str(cfg.routing.default_tier) + ')'}")
    console().print(f"store: {cfg.store.url.split('@')[-1]}")
    for message in cfg.unset_secrets.values():
        typer.secho(f"warning: {message} (needed to serve or evaluate that tier)", fg=typer.colors.YELLOW, err=True)
    console().print("[green]config OK[/]")


def check_config_files(cfg: Config) -> None:
    """ConfigError naming every file the config needs that is not there: a classifier or extractor tier's `model`
    that is not a trained model directory (checked by its manifest; the model is not loaded), a LoRA `adapter`
    directory, a monitor `reference` file (without it input and label drift would be silently off)."""
    from tiergate.train.manifest import MANIFEST, is_model_dir

    problems = []
    for name, tier in cfg.tiers.items():
        if tier.kind in ("classifier", "extractor") and not is_model_dir(tier.model):
            why = "no such directory" if not Path(tier.model).exists() else f"not a trained model (no {MANIFEST})"
            problems.append(f"tiers.{name}.model: {tier.model}: {why}")
        adapter = getattr(tier, "adapter", None)
        if adapter and not (Path(adapter) / "adapter_config.json").is_file():
            why = "no such directory" if not Path(adapter).exists() else "not a PEFT adapter (no adapter_config.json)"
            problems.append(f"tiers.{name}.adapter: {adapter}: {why}")
    for wname, wl in cfg.monitor.workloads.items():
        if wl.reference and not Path(wl.reference).is_file():
            problems.append(f"monitor.workloads.{wname}.reference: {wl.reference}: "
                            + ("no such file" if not Path(wl.reference).exists() else "not a file"))
    if problems:
        raise ConfigError("\n".join(problems))
