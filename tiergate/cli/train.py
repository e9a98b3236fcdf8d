"""Commands for the data -> train -> evaluate loop:

    tiergate data import tickets.csv --text-column body --label-column queue --scrub-pii --out data/all.jsonl
    tiergate data export --workload triage --task classification --since 2026-11-01 --scrub-pii --out data/all.jsonl
    tiergate data split data/all.jsonl --out-dir data/ --val 0.1 --test 0.1
    tiergate train classifier --train data/train.jsonl --eval data/validation.jsonl --out models/triage --set epochs=3
    tiergate eval --model models/triage --data data/test.jsonl --json report.json --html report.html
    tiergate compare --model models/triage --model frontier --data data/test.jsonl --html compare.html
    tiergate compare a.json b.json --md compare.md
    tiergate models list;  tiergate models show triage:v2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tiergate.errors import ConfigError, DataError

TextCol = Annotated[str | None, typer.Option("--text-column", help="CSV column holding the input text")]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="CSV column holding the label / output")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="classification, extraction or generation (default: inferred)")]

Model = Annotated[str, typer.Option("--model", help="model dir, registered model (name[:vN]) or config tier")]
Data = Annotated[str, typer.Option("--data", help="dataset to score on (CSV or JSONL)")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="write the JSON report here")]
HtmlOut = Annotated[Path | None, typer.Option("--html", help="write a self-contained HTML report here")]
MdOut = Annotated[Path | None, typer.Option("--md", help="write a Markdown report here")]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", envvar="TIERGATE_CONFIG",
                                               help="tiergate config, for tier names (default: $TIERGATE_CONFIG "
                                                    "or the embedded defaults)")]
Conc = Annotated[int, typer.Option(help="requests in flight at once (at least 1)")]
Limit = Annotated[int | None, typer.Option(help="score only the first N examples (at least 1)")]
Temp = Annotated[float | None, typer.Option(
    help="sampling temperature of generated answers (default: 0 for local models, so scores repeat; an upstream "
         "tier's own default)")]


def _task(task: str | None) -> Any:
    from tiergate.data import TASKS

    if task is not None and task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}")
    return task


def _read(path: str, task: str | None, text_column: str | None = None, label_column: str | None = None) -> Any:
    from tiergate.data import load_hf_dataset, read_dataset

    if path.startswith("hf://"):
        name, _, split = path[len("hf://"):].partition(":")
        return load_hf_dataset(name, split or "train", text_column=text_column or "text",
                               label_column=label_column or "label", task=_task(task))
    return read_dataset(path, task=_task(task), text_column=text_column, label_column=label_column)


def _console() -> Any:
    from tiergate.cli.common import console

    return console()


def _summary(ds: Any) -> str:
    extra = f", {len(ds.labels())} labels" if ds.task == "classification" else ""
    return f"{len(ds)} examples, task {ds.task}{extra}"


def _parse_sets(pairs: list[str], config_file: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if config_file:
        from tiergate.config import read_yaml_mapping

        values.update(read_yaml_mapping(config_file, top="a mapping of trainer options", label=f"--config {config_file}"))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        values[key.strip()] = value
    return values


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Import, export (from captured traffic) and split datasets.", no_args_is_help=True)
    models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")

    @data_app.command("import")
    def data_import(
        source: Annotated[str, typer.Argument(help="CSV / JSONL file, or hf://NAME[:SPLIT] (needs `datasets`)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write")],
        text_column: TextCol = None, label_column: LabelCol = None, task: TaskOpt = None,
        scrub_pii: Annotated[bool, typer.Option("--scrub-pii", help="replace emails, phones, cards, accounts")] = False,
    ) -> None:
        """Read a dataset (CSV with named columns, JSONL, or the Hugging Face hub) into tiergate JSONL."""
        from tiergate.cli.common import check_output_file
        from tiergate.data import scrub_dataset, write_jsonl

        check_output_file(out, "--out")
        ds = _read(source, task, text_column, label_column)
        if scrub_pii:
            ds = scrub_dataset(ds)
        write_jsonl(ds, out)
        scrubbed = ds.meta.get("pii_scrubbed")
        typer.echo(f"{out}: {_summary(ds)}" + (f"; PII replaced: {scrubbed or 'none'}" if scrub_pii else ""))

    @data_app.command("export")
    def data_export(
        workload: Annotated[str, typer.Option("--workload", "-w", help="workload whose traffic to export")],
        out: Annotated[Path, typer.Option("--out", "-o", help="file to write: .jsonl (or .csv for classification)")],
        task: Annotated[str | None, typer.Option("--task", help="classification, extraction or generation "
                                                 "(default: the workload's task in the config)")] = None,
        since: Annotated[str | None, typer.Option(help="from this ISO date/time, or a duration back (7d)")] = None,
        until: Annotated[str | None, typer.Option(help="before this ISO date/time (exclusive), or a duration back")] = None,
        tier: Annotated[str | None, typer.Option("--tier", "-t", help="only answers of this tier (e.g. the frontier)")] = None,
        role: Annotated[list[str] | None, typer.Option("--role", help="record roles to export, repeatable: primary "
                                                       "(default), shadow, cascade_first")] = None,
        label: Annotated[list[str] | None, typer.Option("--label", help="classification: map answers onto these "
                                                        "labels, skip the rest (repeatable)")] = None,
        scrub_pii: Annotated[bool, typer.Option("--scrub-pii", help="replace emails, phones, cards, accounts")] = False,
        dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="one example per input, latest answer")] = True,
        limit: Annotated[int | None, typer.Option(help="export at most the newest N examples")] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", envvar="TIERGATE_CONFIG", help="YAML config "
                                                    "naming the store (default: embedded defaults)")] = None,
        db: Annotated[str | None, typer.Option("--db", help="store URL, overriding the config")] = None,
    ) -> None:
        """Turn a workload's captured answers into a dataset (JSONL, or CSV for classification)."""
        from tiergate.cli.common import check_output_file, get_config
        from tiergate.data import export_traffic, write_csv, write_jsonl

        suffix = out.suffix.lower()
        if suffix not in (".jsonl", ".json", ".ndjson", ".csv"):
            raise ConfigError(f"--out {out}: write .jsonl (or .csv for classification)")
        check_output_file(out, "--out")
        cfg = get_config(config, db)
        wl = cfg.workloads.get(workload)
        task = task or (wl.task if wl is not None else None)
        if task is None:
            raise ConfigError(f"--task is needed: workload {workload!r} names no task in the config "
                              f"(classification, extraction or generation)")
        if suffix == ".csv" and task != "classification":
            raise ConfigError(f"--out {out}: CSV holds classification datasets; write .jsonl for {task}")
        ds = export_traffic(cfg.store.url, workload, task=_task(task), since=since, until=until, tier=tier,
                            roles=tuple(role or ("primary",)), labels=label or None, scrub_pii=scrub_pii,
                            dedupe=dedupe, limit=limit)
        try:
            (write_csv if suffix == ".csv" else write_jsonl)(ds, out)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename and str(exc.filename) != str(out) else ""
            raise DataError(f"cannot write the dataset ({exc.strerror or exc}{where})", path=str(out)) from exc
        typer.echo(ds.meta["export"].describe())
        typer.echo(f"{out}: {_summary(ds)}")

    @data_app.command("split")
    def data_split(
        file: Annotated[str, typer.Argument(help="dataset file (CSV or JSONL)")],
        out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="writes train/validation/test.jsonl here")],
        val: Annotated[float, typer.Option(help="validation fraction")] = 0.1,
        test: Annotated[float, typer.Option(help="test fraction")] = 0.1,
        seed: Annotated[int, typer.Option(help="shuffle seed")] = 0,
        text_column: TextCol = None, label_column: LabelCol = None, task: TaskOpt = None,
    ) -> None:
        """Stratified train / validation / test split; no test input appears in train."""
        from tiergate.cli.common import check_output_dir
        from tiergate.data import split_dataset, write_jsonl

        check_output_dir(out_dir, "--out-dir")
        splits = split_dataset(_read(file, task, text_column, label_column), val=val, test=test, seed=seed)
        for part in ("train", "validation", "test"):
            path = write_jsonl(getattr(splits, part), out_dir / f"{part}.jsonl")
            typer.echo(f"{path}: {len(getattr(splits, part))} examples")

    @app.command("train")
    def train(
        trainer: Annotated[str, typer.Argument(help="trainer name (see --options)")],
        train_file: Annotated[str | None, typer.Option("--train", help="training data (CSV or JSONL)")] = None,
        eval_file: Annotated[str | None, typer.Option("--eval", help="validation data for calibration and metrics")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="artifact directory")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="trainer option key=value (repeatable)")] = None,
        config_file: Annotated[str | None, typer.Option("--config", help="YAML file of trainer options")] = None,
        name: Annotated[str | None, typer.Option(help="registry name (default: the out dir's name)")] = None,
        register_model: Annotated[bool, typer.Option("--register/--no-register", help="add to the model registry")] = True,
        options: Annotated[bool, typer.Option("--options", help="list the trainer's options and exit")] = False,
        text_column: TextCol = None, label_column: LabelCol = None, task: TaskOpt = None,
    ) -> None:
        """Train a model (e.g. `classifier`) and register it."""
        from tiergate.train import ModelRegistry, get_trainer
        from tiergate.train.base import config_help

        t = get_trainer(trainer)
        if options:
            for key, help_text, default in config_help(t.config_class):
                typer.echo(f"{key:22} {default!r:28} {help_text}")
            return
        if train_file is None or out is None:
            raise ConfigError("tiergate train needs --train FILE and --out DIR")
        from tiergate.cli.common import check_output_dir

        config = t.make_config(_parse_sets(sets or [], config_file))
        check_output_dir(out, "--out")
        if register_model:
            ModelRegistry().check_writable()
        # a trainer of one task reads the data as that task (not as guessed from a few examples)
        train_ds = _read(train_file, task or (t.tasks[0] if len(t.tasks) == 1 else None), text_column, label_column)
        eval_ds = _read(eval_file, train_ds.task, text_column, label_column) if eval_file else None
        typer.echo(f"training {trainer} on {_summary(train_ds)}")
        model = t.train(train_ds, eval_ds, out, config)
        shown = {k: v for k, v in model.metrics.items() if isinstance(v, int | float)}
        typer.echo(json.dumps(shown, indent=2))
        if register_model:
            record = ModelRegistry().register(model, name=name)
            typer.echo(f"registered {record.ref} -> {record.path}")

    def _run_eval(models: list[str], data: str, config_path: str | None, concurrency: int, limit: int | None,
                  task: str | None, text_column: str | None, label_column: str | None,
                  temperature: float | None = None) -> list[Any]:
        from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier
        from tiergate.evaluate.harness import tier_task

        options = EvalOptions(concurrency=concurrency, limit=limit, temperature=temperature)
        # every name is resolved (and refused) before anything is evaluated
        tiers = [resolve_tier(spec, config_path) for spec in models]
        ds = _read(data, _eval_task(tiers, [tier_task(t) for t in tiers], data, task), text_column, label_column)
        reports = []
        for tier in tiers:
            typer.echo(f"evaluating {tier.name} ({tier.kind}) on {_summary(ds)}", err=True)
            reports.append(evaluate_tier(tier, ds, options))
        return reports

    def _eval_task(tiers: list[Any], tasks: list[str | None], data: str, task: str | None) -> str | None:
        """The task to read the data as: the one the tiers are built for (a classifier classifies), --task, else
        guessed from the data. A tier scored on data of another task is refused."""
        fixed = {t.name: k for t, k in zip(tiers, tasks, strict=True) if k is not None}
        if len(set(fixed.values())) > 1:
            raise ConfigError("the tiers are built for different tasks: "
                              + ", ".join(f"{n} ({k})" for n, k in fixed.items()))
        if not fixed:
            return task
        name, wanted = next(iter(fixed.items()))
        if task is not None and task != wanted:
            raise ConfigError(f"--task {task}: tier {name!r} does {wanted}")
        if not data.startswith("hf://"):
            found = _read(data, None).task  # what the file holds, by its outputs
            if wanted == "extraction" or found == "extraction":
                if found != wanted:
                    raise DataError(f"tier {name!r} does {wanted}, but this file holds {found} data "
                                    f"({'JSON objects' if found == 'extraction' else 'text'} as outputs)",
                                    path=data)
        return wanted

    def _show(reports: list[Any]) -> None:
        from rich.table import Table

        from tiergate.evaluate.report import _fmt, datasets_differ, scalar_metrics

        table = Table("metric", *[f"{r.tier} ({r.tier_kind})" for r in reports])
        if datasets_differ(reports):
            table.add_row("dataset", *[str(r.dataset or "n/a") for r in reports])
            table.add_row("examples", *[str(r.n) for r in reports])
            table.add_row("data hash", *[(r.data_hash or "n/a")[:19] for r in reports])
        for m in scalar_metrics(reports):
            table.add_row(m, *[_fmt(r.metrics.get(m)) for r in reports])
        _console().print(table)

    def _check_outputs(json_out: Path | None, html_out: Path | None, md_out: Path | None, concurrency: int,
                       limit: int | None) -> None:
        from tiergate.cli.common import check_output_file, check_positive

        check_positive(concurrency, "--concurrency")
        check_positive(limit, "--limit")
        for path, option in ((json_out, "--json"), (html_out, "--html"), (md_out, "--md")):
            if path is not None:
                check_output_file(path, option)

    @app.command("eval")
    def eval_cmd(model: Model, data: Data, json_out: JsonOut = None, html_out: HtmlOut = None, md_out: MdOut = None,
                 config: ConfigOpt = None, concurrency: Conc = 8, limit: Limit = None,
                 text_column: TextCol = None, label_column: LabelCol = None, task: TaskOpt = None,
                 temperature: Temp = None) -> None:
        """Score one tier on a dataset: quality, latency, cost."""
        from tiergate.evaluate import write_reports

        _check_outputs(json_out, html_out, md_out, concurrency, limit)
        reports = _run_eval([model], data, config, concurrency, limit, task, text_column, label_column, temperature)
        write_reports(reports, json_path=json_out, md_path=md_out, html_path=html_out)
        _show(reports)

    @app.command("compare")
    def compare(
        reports_in: Annotated[list[Path] | None, typer.Argument(help="JSON reports to put side by side")] = None,
        model: Annotated[list[str] | None, typer.Option("--model", help="tiers to evaluate (repeatable)")] = None,
        data: Annotated[str | None, typer.Option("--data", help="dataset for --model")] = None,
        json_out: JsonOut = None, html_out: HtmlOut = None, md_out: MdOut = None, config: ConfigOpt = None,
        concurrency: Conc = 8, limit: Limit = None,
        text_column: TextCol = None, label_column: LabelCol = None, task: TaskOpt = None, temperature: Temp = None,
    ) -> None:
        """Two or more tiers side by side, from saved reports or evaluated now on --data."""
        from tiergate.evaluate import load_reports, write_reports
        from tiergate.evaluate.report import datasets_differ, describe_dataset

        _check_outputs(json_out, html_out, md_out, concurrency, limit)
        reports = [r for path in reports_in or [] for r in load_reports(path)]
        if model:
            if data is None:
                raise ConfigError("--model needs --data")
            reports += _run_eval(model, data, config, concurrency, limit, task, text_column, label_column,
                                 temperature)
        if len(reports) < 2:
            raise ConfigError("compare needs at least two tiers (reports or --model)")
        if len({r.task for r in reports}) > 1:
            raise DataError("the reports are of different tasks: " + ", ".join(sorted({r.task for r in reports})))
        if datasets_differ(reports):
            import warnings

            warnings.warn("the tiers were scored on different datasets, so their figures are not comparable: "
                          + "; ".join(f"{r.tier}: {describe_dataset(r)}" for r in reports), stacklevel=1)
        write_reports(reports, json_path=json_out, md_path=md_out, html_path=html_out, title="tiergate comparison")
        _show(reports)

    @models_app.command("list")
    def models_list(name: Annotated[str | None, typer.Option(help="only this model name")] = None,
                    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False) -> None:
        """Registered models, every version."""
        from rich.table import Table

        from tiergate.train import ModelRegistry

        registry = ModelRegistry()
        records = registry.list(name)
        if as_json:
            for r in records:
                typer.echo(json.dumps(r.to_json()))
            return
        table = Table(title=str(registry.index_path))
        table.add_column("model", no_wrap=True)
        for col in ("kind", "task", "accuracy", "created"):
            table.add_column(col)
        table.add_column("path", overflow="fold")
        for r in records:
            acc = r.metrics.get("accuracy")
            table.add_row(r.ref, r.kind, r.task, f"{acc:.4f}" if isinstance(acc, float) else "",
                          r.created_at or "", r.path)
        _console().print(table)

    @models_app.command("show")
    def models_show(ref: Annotated[str, typer.Argument(help="name, name:vN, or a model directory")]) -> None:
        """A model's manifest: version, data hash, config, metrics, path."""
        from tiergate.train import ModelRegistry
        from tiergate.train.manifest import is_model_dir, read_manifest

        path = Path(ref) if is_model_dir(ref) else Path(ModelRegistry().get(ref).path)
        manifest = read_manifest(path)
        typer.echo(json.dumps({"path": str(path.resolve()), **manifest}, indent=2))
