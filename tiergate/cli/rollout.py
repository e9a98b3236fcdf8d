"""Rollout, monitor and retrain commands (each a thin call into tiergate.rollout / tiergate.monitor):

    tiergate rollout status [WORKLOAD] [--json]
    tiergate rollout start WORKLOAD [--primary frontier --candidate small --canary 10 --canary 50]
    tiergate rollout advance WORKLOAD [--to full] [--reason "..."]
    tiergate rollout hold WORKLOAD;  tiergate rollout resume WORKLOAD
    tiergate rollout rollback WORKLOAD --reason "..."
    tiergate rollout history [WORKLOAD] [--json]
    tiergate monitor status [WORKLOAD] [--json]
    tiergate retrain WORKLOAD [--out DIR] [--set epochs=2] [--margin 0.0] [--no-start]

Changes are written to the store; running gateways adopt them within their `refresh_s` (1 s by default).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tiergate.cli.common import ConfigOption, DbOption, check_output_dir, console, get_config, open_engine
from tiergate.errors import ConfigError

Workload = Annotated[str, typer.Argument(help="the workload")]
Reason = Annotated[Optional[str], typer.Option("--reason", "-r", help="why (kept in the audit log)")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _store(config: Optional[Path], db: Optional[str], *, create: bool = False) -> Any:
    """The config and its rollout store; a SQLite store that does not exist is an error unless `create` (only
    `rollout start` may begin one: the others read or change a rollout that must already be there)."""
    from tiergate.rollout.state import RolloutStore

    cfg = get_config(config, db)
    return cfg, RolloutStore(open_engine(cfg, create=create))


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _show(state: Any) -> None:
    held = " (held)" if state.held else ""
    typer.echo(f"{state.workload}: {state.stage}{held}, {state.percent:g}% to {state.candidate}, "
               f"primary {state.primary} [version {state.version}; {state.reason}]")


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def register(app: typer.Typer) -> None:
    rollout = typer.Typer(help="Staged cutover of a workload to its candidate tier.", no_args_is_help=True)
    monitor = typer.Typer(help="Drift and hallucination monitoring.", no_args_is_help=True)
    app.add_typer(rollout, name="rollout")
    app.add_typer(monitor, name="monitor")

    @rollout.command("status")
    def status(workload: Annotated[Optional[str], typer.Argument(help="one workload (default: all)")] = None,
               as_json: AsJson = False, config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
        """Stage, tiers and the gate window of each rollout (rebuilt from the store)."""
        from tiergate.rollout.inspect import rollout_status

        cfg = get_config(config, db)
        rows = rollout_status(open_engine(cfg, create=False), cfg, workload)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
            return
        if not rows:
            typer.echo("no rollouts yet (a workload with a `rollout` router starts one when the gateway starts)")
        for r in rows:
            w = r.get("window") or {}
            held = " (held)" if r["held"] else ""
            typer.echo(f"{r['workload']}: {r['stage']}{held}, {r['percent']:g}% of traffic to {r['candidate']}, "
                       f"primary {r['primary']} [version {r['version']}, since {_when(r['stage_since'])}]")
            if not r.get("configured", True):
                typer.echo("  not in this config: no gateway with it routes by this rollout")
            if r.get("candidate_model"):
                typer.echo(f"  candidate model: {r['candidate_model']}")
            if w:
                typer.echo(f"  this stage: {w['compared']} pairs, agreement {_pct(w['agreement'])} "
                           f"(lower bound {_pct(w['agreement_lower'])}), errors {w['errors']}/{w['answers']}, "
                           f"flagged {w['flagged']}/{w['checked']}, p95 {_pct(w['latency_ms_p95'])} ms")
                action = r.get("next_action") or "wait"
                action = {"held": "held by an operator (tiergate rollout resume)",
                          "none": "rolled back (tiergate rollout start begins again)" if r["stage"] == "rolled_back"
                          else "full: nothing to advance to; a failing gate still rolls back"}.get(action, action)
                typer.echo(f"  gates: {'; '.join(r.get('gates') or []) or '-'} -> {action}")
                if r.get("advance_blocked"):
                    typer.echo(f"  advance held: {r['advance_blocked']}")
            typer.echo(f"  last change: {r['reason']} ({r['actor']}, {_when(r['updated_at'])})")


    @rollout.command("start")
    def start(workload: Workload,
              primary: Annotated[Optional[str], typer.Option(help="tier answering until cutover")] = None,
              candidate: Annotated[Optional[str], typer.Option(help="tier being rolled out")] = None,
              canary: Annotated[Optional[list[float]], typer.Option(help="canary percent (repeatable)")] = None,
              reason: Reason = None, config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
        """(Re)start a rollout at shadow; tiers and stages default to the workload's `rollout` router."""
        from tiergate.rollout.inspect import rollout_options, start_options
        from tiergate.rollout.state import default_stages

        cfg, store = _store(config, db, create=True)
        opts = rollout_options(cfg, workload)
        current = store.get(workload)
        primary = primary or (opts.primary if opts else None) or (current.primary if current else None)
        candidate = candidate or (opts.candidate if opts else None) or (current.candidate if current else None)
        if not primary or not candidate:
            raise ConfigError(f"{workload}: give --primary and --candidate (no `rollout` router in the config)")
        # tiers are checked against a given config; the embedded defaults do not know the gateway's tiers
        checked = start_options(cfg, workload, primary=primary, candidate=candidate,
                                canary=canary or (opts.canary if opts else [10, 50]), check_tiers=config is not None)
        stages = default_stages(checked.canary)
        _show(store.start(workload, primary=primary, candidate=candidate, stages=stages, actor="cli",
                          reason=reason or "started from the CLI",
                          candidate_model=current.candidate_model if current else None))

    @rollout.command("advance")
    def advance(workload: Workload,
                to: Annotated[Optional[str], typer.Option("--to", help="stage to jump to (default: the next)")] = None,
                reason: Reason = None, config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
        """Move to the next stage now, whatever the gates say."""
        _, store = _store(config, db)
        _show(store.advance(workload, to_stage=to, reason=reason or "advanced from the CLI", actor="cli"))

    @rollout.command("hold")
    def hold(workload: Workload, reason: Reason = None, config: Optional[Path] = ConfigOption,
             db: Optional[str] = DbOption) -> None:
        """Stop automatic advance (automatic rollback stays armed)."""
        _, store = _store(config, db)
        _show(store.set_held(workload, True, reason=reason or "held from the CLI", actor="cli"))

    @rollout.command("resume")
    def resume(workload: Workload, reason: Reason = None, config: Optional[Path] = ConfigOption,
               db: Optional[str] = DbOption) -> None:
        """Let the gates advance the rollout again."""
        _, store = _store(config, db)
        _show(store.set_held(workload, False, reason=reason or "resumed from the CLI", actor="cli"))

    @rollout.command("rollback")
    def rollback(workload: Workload, reason: Reason = None, config: Optional[Path] = ConfigOption,
                 db: Optional[str] = DbOption) -> None:
        """Send all traffic back to the primary tier now."""
        from tiergate.rollout.state import ROLLED_BACK

        _, store = _store(config, db)
        _show(store.force(workload, ROLLED_BACK, reason=reason or "rolled back from the CLI", actor="cli"))

    @rollout.command("history")
    def history(workload: Annotated[Optional[str], typer.Argument(help="one workload (default: all)")] = None,
                as_json: AsJson = False, config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
        """The audit log: every transition with its reason, actor and gate statistics."""
        from rich.table import Table

        _, store = _store(config, db)
        if workload is not None:
            store.require(workload)  # an unknown workload is an error, as for advance and hold
        rows = store.history(workload)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
            return
        table = Table("at", "workload", "from", "to", "actor", "reason")
        for r in rows:
            table.add_row(_when(r["at"]), r["workload"], r["from_stage"] or "", r["to_stage"], r["actor"] or "",
                          r["reason"] or "")
        console().print(table)

    @rollout.command("pairs")
    def pairs(workload: Workload,
              disagree: Annotated[bool, typer.Option("--disagree", help="only the pairs that did not agree")] = False,
              limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="how many, newest first")] = 20,
              as_json: AsJson = False, config: Optional[Path] = ConfigOption, db: Optional[str] = DbOption) -> None:
        """The latest scored shadow pairs of a rollout: the request, both answers, and whether they agreed."""
        from rich.table import Table

        from tiergate.rollout.inspect import shadow_pairs

        _, store = _store(config, db)
        store.require(workload)
        rows = shadow_pairs(store.engine, workload, disagree_only=disagree, limit=limit)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
            return
        table = Table("at", "stage", "agree", "request", "primary", "candidate",
                      title=f"{workload}: the latest {len(rows)} {'disagreeing ' if disagree else ''}pairs")
        for p in rows:
            table.add_row(_when(p["at"]), p["stage"] or "", {True: "yes", False: "no"}.get(p["agree"], "-"),
                          (p["input"] or "")[:80], f"{p['primary_tier']}: {(p['primary_answer'] or '')[:60]}",
                          f"{p['candidate_tier']}: {(p['candidate_answer'] or '')[:60]}")
        console().print(table)

    @monitor.command("status")
    def monitor_status(workload: Annotated[Optional[str], typer.Argument(help="one workload")] = None,
                       as_json: AsJson = False, config: Optional[Path] = ConfigOption,
                       db: Optional[str] = DbOption) -> None:
        """Latest drift and hallucination checks per workload, and alarms in the last 24 hours."""
        from rich.table import Table

        from tiergate.monitor.status import monitor_status as read

        data = read(open_engine(get_config(config, db), create=False), workload)
        if as_json:
            typer.echo(json.dumps(data, indent=2, default=str))
            return
        if not data:
            typer.echo("no monitor checks stored yet (the gateway's monitor tests a window every `step` requests)")
            return
        table = Table("workload", "check", "at", "n", "statistic", "p-value", "alarm", "alarms / windows (24h)")
        for wl, checks in data.items():
            for kind, c in checks.items():
                table.add_row(wl, kind, _when(c["at"]), str(c["n"]), _pct(c["statistic"]),
                              "-" if c["p_value"] is None else f"{c['p_value']:.4g}",
                              "[red]ALARM[/]" if c["alarm"] else "reset (new model)"
                              if (c.get("detail") or {}).get("reset") else "ok",
                              f"{c.get('alarms_24h', 0)} / {c.get('windows_24h', 0)}")
        console().print(table)

    @app.command("retrain")
    def retrain_cmd(workload: Workload,
                    out: Annotated[Optional[str], typer.Option(help="artifact directory")] = None,
                    sets: Annotated[Optional[list[str]], typer.Option("--set", help="trainer option k=v")] = None,
                    since_days: Annotated[float, typer.Option(help="traffic window in days")] = 30.0,
                    frontier: Annotated[Optional[list[str]], typer.Option(help="ground-truth tier (repeatable)")] = None,
                    current: Annotated[Optional[str], typer.Option(help="current model dir to beat")] = None,
                    margin: Annotated[float, typer.Option(help="required accuracy gain over the current model")] = 0.0,
                    min_examples: Annotated[int, typer.Option(help="fewest fresh examples to train on")] = 30,
                    start_rollout: Annotated[bool, typer.Option("--start/--no-start",
                                                                help="start a shadow rollout if accepted")] = True,
                    as_json: AsJson = False, config: Optional[Path] = ConfigOption,
                    db: Optional[str] = DbOption) -> None:
        """Train a candidate on recent frontier-answered traffic; shadow it only if it is not worse."""
        from tiergate.rollout.retrain import RetrainOptions, retrain

        cfg = get_config(config, db)
        if out:
            check_output_dir(out, "--out")
        bad = [s for s in sets or [] if "=" not in s]
        if bad:
            raise ConfigError(f"--set {bad[0]}: expected KEY=VALUE")
        trainer = dict(s.split("=", 1) for s in (sets or []))
        options = RetrainOptions(out=out, frontier=frontier, since_days=since_days, current=current, margin=margin,
                                 min_examples=min_examples, trainer=trainer, start_rollout=start_rollout)
        report = retrain(open_engine(cfg, create=False), cfg, workload, options)
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2, default=str))
            return
        verdict = "accepted" if report.accepted else "rejected"
        typer.echo(f"{workload}: {report.examples} fresh examples ({report.train_examples} train, "
                   f"{report.test_examples} test); candidate {report.model_path} {verdict}: {report.reason}")
        if report.rollout:
            typer.echo(f"shadow rollout started: {report.rollout['primary']} -> {report.rollout['candidate']} "
                       f"serving {report.rollout['candidate_model']}")
