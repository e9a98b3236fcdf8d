"""Router commands: train, evaluate and calibrate routers.

    tiergate router kinds
    tiergate router train learned --outcomes train.jsonl --out routers/triage [--set model=mlp] [--cost small=0.0001]
    tiergate router train learned --shadow-db sqlite:///tiergate.db --small intents --large frontier --out routers/t
    tiergate router train boundary --data train.csv --val val.csv --classifier models/intents --out routers/oos
    tiergate router eval --router routers/triage --outcomes test.jsonl --json report.json --html report.html
    tiergate router calibrate --router routers/triage --outcomes val.jsonl --target-share 0.3      # or --quality-floor 0.95
    tiergate router calibrate --classifier models/intents --data val.csv --target-accuracy 0.99 --out cascade.json
    tiergate router boundary --router routers/oos --data labelled.csv --oos-label oos --json boundary.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tiergate.cli.common import check_output_dir, check_output_file, console
from tiergate.errors import ConfigError

Sets = Annotated[list[str] | None, typer.Option("--set", help="option key=value (repeatable; values parsed as YAML)")]
Costs = Annotated[list[str] | None, typer.Option("--cost", help="TIER=USD per request, where the file has no costs")]
Prices = Annotated[list[str] | None, typer.Option("--price", help="TIER=MODEL: price-book price for the prompt's "
                                                                 "tokens, where the file has no costs")]
TextCol = Annotated[str | None, typer.Option("--text-column", help="CSV column holding the text")]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="CSV column holding the label")]


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _sets(items: list[str] | None) -> dict[str, Any]:
    import yaml

    return {k: yaml.safe_load(v) for k, v in _pairs(items, "--set").items()}


def _options(cls: Any, items: list[str] | None) -> Any:
    """A router's options from --set KEY=VALUE, a bad key or value named in a CLI error."""
    from pydantic import ValidationError

    from tiergate.config import format_validation_error

    try:
        return cls(**_sets(items))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "--set")) from exc


def _usd(tier: str, value: str) -> float:
    import math

    try:
        usd = float(value)
    except ValueError:
        raise ConfigError(f"--cost {tier}={value}: expected TIER=USD, a number of dollars per request") from None
    if not (math.isfinite(usd) and usd >= 0):
        raise ConfigError(f"--cost {tier}={value}: a cost must be a number of USD, 0 or more")
    return usd


def _in_range(value: float | None, flag: str, low_open: bool, what: str) -> None:
    """Refuse a share outside [0, 1] ((0, 1] when `low_open`), naming the flag."""
    import math

    if value is not None and not (math.isfinite(value) and (0 < value if low_open else 0 <= value) and value <= 1):
        raise ConfigError(f"{flag} {value:g}: must be {what}")


def _outcomes(path: str, costs: list[str] | None, prices: list[str] | None) -> Any:
    from tiergate.routing.outcomes import fill_costs, read_outcomes

    fixed = {k: _usd(k, v) for k, v in _pairs(costs, "--cost").items()}
    oc = read_outcomes(path)
    price_map = _pairs(prices, "--price")
    if fixed or price_map:
        oc = fill_costs(oc, fixed=fixed, prices=price_map)
    return oc


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=float) + "\n")
        typer.echo(f"wrote {path}", err=True)


def _check_outputs(*pairs: tuple[Path | None, str]) -> None:
    """Refuse, before any work, an output file that cannot be written."""
    for path, option in pairs:
        if path is not None:
            check_output_file(path, option)


def _measures(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("router", "AIQ", "APGR", "CPT(50%)", "CPT(80%)")
    for name in ("router", "random", "oracle"):
        m = report[name]
        table.add_row(name, *[("n/a" if m[k] is None else f"{m[k]:.4f}") for k in ("aiq", "apgr", "cpt_50", "cpt_80")])
    console().print(table)
    if report.get("operating_point"):
        typer.echo("operating point: " + json.dumps(report["operating_point"], default=float))


def register(app: typer.Typer) -> None:
    router_app = typer.Typer(help="Train, evaluate and calibrate routers.", no_args_is_help=True)
    app.add_typer(router_app, name="router")

    @router_app.command("kinds")
    def kinds() -> None:
        """List the router kinds a workload policy can use."""
        from tiergate.routing.registry import router_class, router_kinds

        for kind in router_kinds():
            doc = (router_class(kind).__doc__ or "").strip().splitlines()
            typer.echo(f"{kind:10} {doc[0] if doc else ''}")

    @router_app.command("train")
    def train(
        kind: Annotated[str, typer.Argument(help="learned or boundary")],
        out: Annotated[Path, typer.Option("--out", help="router directory to write")],
        outcomes: Annotated[str | None, typer.Option("--outcomes", help="outcomes file (learned)")] = None,
        shadow_db: Annotated[str | None, typer.Option("--shadow-db", help="learned: build outcomes from the shadow "
                                                                          "pairs captured in this store URL")] = None,
        workload: Annotated[str | None, typer.Option(help="learned --shadow-db: only this workload")] = None,
        agreement: Annotated[str, typer.Option(help="learned --shadow-db: exact, json or rouge_l")] = "exact",
        small: Annotated[str | None, typer.Option(help="small tier in the outcomes (default: the cheaper)")] = None,
        large: Annotated[str | None, typer.Option(help="large tier in the outcomes")] = None,
        data: Annotated[str | None, typer.Option("--data", help="the small model's training data (boundary)")] = None,
        val: Annotated[str | None, typer.Option("--val", help="in-scope validation data (boundary)")] = None,
        classifier: Annotated[str | None, typer.Option(help="trained classifier dir (boundary)")] = None,
        oos: Annotated[str | None, typer.Option("--oos", help="examples of out-of-scope requests, texts only: .csv/.tsv (text column), .jsonl (input) or .txt (one a line); boundary: combine=logistic, target_oos_recall, and the recall they get")] = None,
        oos_label: Annotated[str, typer.Option(help="label of out-of-scope rows in --val / --oos")] = "oos",
        sets: Sets = None, cost: Costs = None, price: Prices = None,
        text_column: TextCol = None, label_column: LabelCol = None,
    ) -> None:
        """Train a router: `learned` on outcomes, `boundary` on the small model's training data."""
        if kind == "learned":
            from tiergate.routing.learned import LearnedTrainOptions, train_learned_router

            if shadow_db is not None:
                from tiergate.routing.shadow import outcomes_from_shadow
                from tiergate.store.db import open_store

                if not (small and large):
                    raise ConfigError("--shadow-db needs --small TIER and --large TIER")
                if agreement not in ("exact", "json", "rouge_l"):
                    raise ConfigError("--agreement must be exact, json or rouge_l")
                oc = outcomes_from_shadow(open_store(shadow_db, create=False), small=small, large=large, workload=workload,
                                          how=agreement)  # type: ignore[arg-type]
                typer.echo(f"{len(oc)} shadow pairs from {oc.path}")
            elif outcomes is not None:
                oc = _outcomes(outcomes, cost, price)
            else:
                raise ConfigError("tiergate router train learned needs --outcomes FILE or --shadow-db URL")
            options = _options(LearnedTrainOptions, sets)
            check_output_dir(out, "--out")
            model = train_learned_router(oc, options, small=small, large=large)
            model.save(out)
            cv = model.meta["cv"]
            typer.echo(f"{out}: learned router {model.small} -> {model.large}, threshold {model.threshold:.4f}, "
                       f"cross-validated AUC {model.meta['cv_auc']:.4f}")
            _measures(cv)
        elif kind == "boundary":
            from tiergate.routing.boundary import BoundaryFitOptions
            from tiergate.routing.boundary_fit import fit_boundary_from_files

            if data is None or val is None:
                raise ConfigError("tiergate router train boundary needs --data FILE and --val FILE")
            options = _options(BoundaryFitOptions, sets)
            check_output_dir(out, "--out")
            model = fit_boundary_from_files(data, val, classifier=classifier, oos=oos, oos_label=oos_label,
                                            options=options,
                                            text_column=text_column, label_column=label_column)
            model.save(out)
            meta = model.meta
            typer.echo(f"{out}: boundary on {meta['train_n']} training texts, threshold {model.threshold:.4f} "
                       f"(keeps {meta['val_in_scope_kept']:.1%} of {meta['val_n']} in-scope validation texts)")
            if "oos_recall" in meta:
                lo, hi = meta["oos_recall_ci95"]
                typer.echo(f"escalates {meta['oos_recall']:.1%} of the {meta['oos_n']} out-of-scope examples (95% "
                           f"interval {lo:.1%}-{hi:.1%})"
                           + ("; the boundary was fitted on them, so expect less on new out-of-scope traffic: check "
                              "it with `tiergate router boundary` on held-out examples"
                              if meta["oos_recall_in_sample"] else ""))
        else:
            raise ConfigError(f"router kind {kind!r} is not trained (trainable: learned, boundary)")

    @router_app.command("eval")
    def eval_cmd(
        router: Annotated[Path, typer.Option("--router", help="trained router directory")],
        outcomes: Annotated[str, typer.Option("--outcomes", help="held-out outcomes file")],
        json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
        html_out: Annotated[Path | None, typer.Option("--html", help="write an HTML report here")] = None,
        threshold: Annotated[float | None, typer.Option(help="operating point (default: the router's)")] = None,
        small: Annotated[str | None, typer.Option(help="small tier in the outcomes")] = None,
        large: Annotated[str | None, typer.Option(help="large tier in the outcomes")] = None,
        cost: Costs = None, price: Prices = None,
    ) -> None:
        """The router's cost-quality curve, AIQ, APGR, CPT(50%), CPT(80%), beside random and oracle."""
        from tiergate.routing.evaluation import evaluate_on_outcomes, load_router_model

        _check_outputs((json_out, "--json"), (html_out, "--html"))
        report = evaluate_on_outcomes(load_router_model(router), _outcomes(outcomes, cost, price), small=small,
                                      large=large, threshold=threshold)
        report["router_dir"] = str(router)
        _measures(report)
        _write_json(json_out, report)
        if html_out is not None:
            from tiergate.routing.report import router_html

            html_out.write_text(router_html(report, f"Router {router.name} on {Path(outcomes).name}"))
            typer.echo(f"wrote {html_out}", err=True)

    @router_app.command("calibrate")
    def calibrate(
        router: Annotated[Path | None, typer.Option("--router", help="trained router dir (with --outcomes)")] = None,
        outcomes: Annotated[str | None, typer.Option("--outcomes", help="validation outcomes")] = None,
        target_share: Annotated[float | None, typer.Option(help="share of requests to the large tier")] = None,
        quality_floor: Annotated[float | None, typer.Option(help="least share of the large tier's quality")] = None,
        classifier: Annotated[str | None, typer.Option(help="classifier dir: calibrate a cascade (with --data)")] = None,
        data: Annotated[str | None, typer.Option("--data", help="labelled validation data (cascade)")] = None,
        target_accuracy: Annotated[float | None, typer.Option(help="cascade: accuracy on kept answers")] = None,
        keep_share: Annotated[float | None, typer.Option(help="cascade: share of answers the small tier keeps")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="cascade: write the calibration JSON here")] = None,
        write: Annotated[bool, typer.Option("--write/--dry-run", help="store the threshold in the router dir")] = True,
        cost: Costs = None, price: Prices = None, text_column: TextCol = None, label_column: LabelCol = None,
    ) -> None:
        """Pick a threshold on validation data: a trained router on outcomes, or a cascade on labelled data."""
        if classifier is not None:
            from tiergate.routing.boundary_fit import calibrate_cascade_from_files

            if data is None:
                raise ConfigError("cascade calibration needs --data FILE (labelled validation data)")
            _check_outputs((out, "--out"))
            result = calibrate_cascade_from_files(classifier, data, target_accuracy=target_accuracy,
                                                  keep_share=keep_share, text_column=text_column,
                                                  label_column=label_column)
            typer.echo(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2, default=float))
            _write_json(out, result)
            return
        if router is None or outcomes is None:
            raise ConfigError("give --router DIR --outcomes FILE, or --classifier DIR --data FILE")
        _in_range(target_share, "--target-share", False, "a share of requests between 0 and 1")
        _in_range(quality_floor, "--quality-floor", True,
                  "a share of the large tier's quality, over 0 and at most 1 (0.95: 95% of its quality)")
        from tiergate.errors import DataError
        from tiergate.routing.evaluation import calibrate_on_outcomes, load_router_model

        oc = _outcomes(outcomes, cost, price)
        result = calibrate_on_outcomes(load_router_model(router), oc, target_large_share=target_share,
                                       quality_floor=quality_floor)
        if quality_floor is not None:
            large_quality = float(oc.scores(result["large"]).mean())
            if result["validation"]["quality"] < quality_floor * large_quality - 1e-12:
                raise DataError(f"--quality-floor {quality_floor:g}: no threshold reaches {quality_floor:g} x the "
                                f"large tier's mean quality ({large_quality:.4g}) on these outcomes; no threshold "
                                "written", path=outcomes)
        typer.echo(json.dumps(result, indent=2, default=float))
        if write:
            info_path = router / "router.json"
            info = json.loads(info_path.read_text())
            info["threshold"] = result["threshold"]
            info.setdefault("meta", {})["calibration"] = result
            info_path.write_text(json.dumps(info, indent=2, default=float) + "\n")
            typer.echo(f"threshold stored in {info_path}", err=True)

    @router_app.command("boundary")
    def boundary(
        router: Annotated[Path, typer.Option("--router", help="boundary router directory")],
        data: Annotated[str, typer.Option("--data", help="labelled set with out-of-scope examples")],
        oos_label: Annotated[str, typer.Option(help="the label of out-of-scope examples")] = "oos",
        threshold: Annotated[float | None, typer.Option(help="override the calibrated threshold")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
        text_column: TextCol = None, label_column: LabelCol = None,
    ) -> None:
        """Evaluate a boundary: in-scope accuracy, out-of-scope recall, AUROC, the trade-off curve."""
        from tiergate.data import read_dataset
        from tiergate.routing.boundary import BoundaryModel
        from tiergate.routing.evaluation import boundary_report

        _check_outputs((json_out, "--json"))
        ds = read_dataset(data, task="classification", text_column=text_column, label_column=label_column)
        report = boundary_report(BoundaryModel.load(router), ds.texts, [str(o) for o in ds.outputs],
                                 oos_label=oos_label, threshold=threshold)
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2, default=float))
        _write_json(json_out, report)
