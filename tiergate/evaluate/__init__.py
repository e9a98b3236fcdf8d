"""One evaluation harness for every tier: quality, latency and cost on the same data.

    from tiergate.evaluate import EvalOptions, evaluate_tier, resolve_tier, write_reports
    report = evaluate_tier(resolve_tier("models/intents"), test_ds, EvalOptions(concurrency=16))
    write_reports([report], json_path="report.json", html_path="report.html")

Metrics live in a registry (`tiergate.evaluate.metrics.register_metric`); see that module for the built-ins.
Importing this package loads no torch.
"""

from tiergate.evaluate.harness import (
    EvalOptions,
    TierReport,
    evaluate_tier,
    evaluate_tier_async,
    resolve_tier,
)
from tiergate.evaluate.metrics import (
    Scored,
    compute_metrics,
    metric_names,
    register_metric,
    unregister_metric,
)
from tiergate.evaluate.report import combined_json, html_report, load_reports, markdown_report, write_reports

__all__ = [
    "EvalOptions", "TierReport", "evaluate_tier", "evaluate_tier_async", "resolve_tier",
    "Scored", "compute_metrics", "metric_names", "register_metric", "unregister_metric",
    "combined_json", "html_report", "load_reports", "markdown_report", "write_reports",
]
