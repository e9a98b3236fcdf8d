"""Evaluation reports as JSON, Markdown and one self-contained HTML page, for one tier or several side by side.

    write_reports([report_a, report_b], json_path="r.json", md_path="r.md", html_path="r.html")
    reports = load_reports("r.json")          # back to TierReport objects (for `tiergate compare`)

JSON: one tier gives a flat object (`task`, `n`, `tier`, then each metric by name: `accuracy`, `macro_f1`,
`latency_ms_p50`, ...); several give `{"task", "n", "dataset", "tiers": [<flat object>, ...]}`.
The HTML page embeds its plots as PNG data and needs no network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from tiergate.errors import DataError
from tiergate.evaluate.harness import TierReport

QUALITY = {
    "classification": ["accuracy", "macro_f1", "ece"],
    "extraction": ["json_valid", "field_precision", "field_recall", "field_f1", "exact_match"],
    "generation": ["rouge_l", "embedding_similarity"],
}
PERFORMANCE = ["latency_ms_p50", "latency_ms_p95", "latency_ms_mean", "throughput_rps", "cost_per_1k_usd",
               "errors", "error_rate"]


def scalar_metrics(reports: list[TierReport]) -> list[str]:
    """Metric names to tabulate: the task's quality metrics, other scalars, then performance."""
    task = reports[0].task
    names = [m for m in QUALITY.get(task, []) if any(m in r.metrics for r in reports)]
    extra = sorted({k for r in reports for k, v in r.metrics.items()
                    if isinstance(v, int | float) and k not in names and k not in PERFORMANCE})
    return names + extra + [m for m in PERFORMANCE if any(m in r.metrics for r in reports)]


def datasets_differ(reports: list[TierReport]) -> bool:
    """True when the reports were not scored on the same examples (other data hash or count)."""
    return len({(r.data_hash, r.n) for r in reports}) > 1


def describe_dataset(report: TierReport) -> str:
    return f"{report.dataset or 'n/a'} ({report.n} examples{', ' + report.data_hash if report.data_hash else ''})"


def combined_json(reports: list[TierReport]) -> dict[str, Any]:
    if len(reports) == 1:
        return reports[0].to_json()
    first = reports[0]
    if datasets_differ(reports):  # no one dataset to name: each tier's own is in its entry
        return {"task": first.task, "n": None, "dataset": None, "data_hash": None, "datasets_differ": True,
                "tiers": [r.to_json() for r in reports]}
    return {"task": first.task, "n": first.n, "dataset": first.dataset, "data_hash": first.data_hash,
            "tiers": [r.to_json() for r in reports]}


def load_reports(path: str | Path) -> list[TierReport]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("report not found", path=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a report file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not a tiergate report (not UTF-8 text: {exc.reason})", path=str(path)) from exc
    except OSError as exc:
        raise DataError(f"cannot read the report ({exc.strerror or exc})", path=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed report JSON ({exc.msg})", path=str(path), line=exc.lineno) from exc
    items = data.get("tiers", [data]) if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise DataError("not a tiergate report (want the JSON object `tiergate eval --json` writes)", path=str(path))
    try:
        return [TierReport.from_json(item) for item in items]
    except KeyError as exc:
        raise DataError(f"not a tiergate report (no {exc})", path=str(path)) from exc


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def confused_pairs(report: TierReport, top: int = 10) -> list[tuple[str, str, int]]:
    cm = report.metrics.get("confusion_matrix")
    if not cm:
        return []
    labels, matrix = cm["labels"], cm["matrix"]
    pairs = [(labels[i], labels[j], c) for i, row in enumerate(matrix) for j, c in enumerate(row) if i != j and c]
    return sorted(pairs, key=lambda t: -t[2])[:top]


def markdown_report(reports: list[TierReport], title: str = "tiergate evaluation") -> str:
    first = reports[0]
    if datasets_differ(reports):
        lines = [f"# {title}", "", f"- task: {first.task}",
                 "- **the tiers were scored on different datasets; their figures are not comparable:**"]
        lines += [f"  - {r.tier}: {describe_dataset(r)}" for r in reports] + [""]
    else:
        lines = [f"# {title}", "", f"- task: {first.task}", f"- examples: {first.n}",
                 f"- dataset: {first.dataset or 'n/a'} ({first.data_hash or ''})", ""]
    lines.append("| metric | " + " | ".join(f"{r.tier} ({r.tier_kind})" for r in reports) + " |")
    lines.append("|---|" + "---|" * len(reports))
    for m in scalar_metrics(reports):
        lines.append(f"| {m} | " + " | ".join(_fmt(r.metrics.get(m)) for r in reports) + " |")
    for r in reports:
        pairs = confused_pairs(r)
        if pairs:
            lines += ["", f"## {r.tier}: most confused (expected -> answered)", "", "| expected | answered | count |",
                      "|---|---|---|"] + [f"| {g} | {p} | {c} |" for g, p, c in pairs]
        for key, heading in (("per_field", "per field"), ("per_field_span", "per field, exact spans")):
            per_field = r.metrics.get(key)
            if not per_field:
                continue
            lines += ["", f"## {r.tier}: {heading}", "", "| field | precision | recall | f1 | support |",
                      "|---|---|---|---|---|"]
            lines += [f"| {k} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['support']} |"
                      for k, v in per_field.items()]
    return "\n".join(lines) + "\n"


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bars(reports: list[TierReport], metrics: list[str], title: str, ylabel: str) -> str | None:
    from matplotlib.figure import Figure

    metrics = [m for m in metrics if any(isinstance(r.metrics.get(m), int | float) for r in reports)]
    if not metrics:
        return None
    fig = Figure(figsize=(max(4.0, 1.4 * len(metrics) * max(1, len(reports)) / 2 + 2), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / len(reports)
    for k, r in enumerate(reports):
        xs = [i + k * width for i in range(len(metrics))]
        ax.bar(xs, [float(r.metrics.get(m) or 0.0) for m in metrics], width, label=r.tier)
    ax.set_xticks([i + width * (len(reports) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _confusion_plot(report: TierReport) -> str | None:
    from matplotlib.figure import Figure

    cm = report.metrics.get("confusion_matrix")
    if not cm or not cm["labels"]:
        return None
    labels, matrix = cm["labels"], cm["matrix"]
    size = min(12.0, 3.0 + 0.12 * len(labels))
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.7)
    if len(labels) <= 30:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("answered")
    ax.set_ylabel("expected")
    ax.set_title(f"{report.tier}: confusion matrix")
    return _png(fig)


def html_report(reports: list[TierReport], title: str = "tiergate evaluation") -> str:
    e = html.escape
    first = reports[0]
    rows = "".join(f"<tr><td>{e(m)}</td>" + "".join(f"<td>{e(_fmt(r.metrics.get(m)))}</td>" for r in reports) + "</tr>"
                   for m in scalar_metrics(reports))
    head = "".join(f"<th>{e(r.tier)}<br><small>{e(r.tier_kind)}</small></th>" for r in reports)
    plots = [_bars(reports, QUALITY.get(first.task, []), "quality", "score"),
             _bars(reports, ["latency_ms_p50", "latency_ms_p95"], "latency", "ms"),
             _bars(reports, ["cost_per_1k_usd"], "cost per 1,000 requests", "USD")]
    plots += [_confusion_plot(r) for r in reports]
    imgs = "".join(f'<img alt="plot" src="{p}">' for p in plots if p)
    sections = []
    for r in reports:
        pairs = confused_pairs(r)
        if pairs:
            sections.append(f"<h3>{e(r.tier)}: most confused</h3><table><tr><th>expected</th><th>answered</th>"
                            "<th>count</th></tr>" + "".join(f"<tr><td>{e(g)}</td><td>{e(p)}</td><td>{c}</td></tr>"
                                                           for g, p, c in pairs) + "</table>")
        if r.mistakes:
            sections.append(f"<h3>{e(r.tier)}: sample mistakes</h3><table><tr><th>input</th><th>expected</th>"
                            "<th>answer</th></tr>" + "".join(
                                f"<tr><td>{e(str(m['input']))}</td><td>{e(json.dumps(m['expected'], ensure_ascii=False))}"
                                f"</td><td>{e(str(m['answer'] if m['error'] is None else 'error: ' + m['error']))}</td></tr>"
                                for m in r.mistakes[:15]) + "</table>")
    if datasets_differ(reports):
        about = ("<b>the tiers were scored on different datasets; their figures are not comparable</b><ul>"
                 + "".join(f"<li>{e(r.tier)}: <code>{e(describe_dataset(r))}</code></li>" for r in reports) + "</ul>")
    else:
        about = f"{first.n} examples, dataset <code>{e(str(first.dataset))}</code>"
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}"
             "img{max-width:100%;margin:8px;vertical-align:top}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
            f"</head><body><h1>{e(title)}</h1><p>task <b>{e(first.task)}</b>, {about}</p><table><tr><th>metric</th>{head}</tr>{rows}</table>"
            f"<div>{imgs}</div>{''.join(sections)}</body></html>\n")


def write_reports(reports: list[TierReport], *, json_path: str | Path | None = None, md_path: str | Path | None = None,
                  html_path: str | Path | None = None, title: str = "tiergate evaluation") -> None:
    if not reports:
        raise DataError("no reports to write")
    for path, text in ((json_path, lambda: json.dumps(combined_json(reports), indent=2, ensure_ascii=False) + "\n"),
                       (md_path, lambda: markdown_report(reports, title)),
                       (html_path, lambda: html_report(reports, title))):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text())
