"""Where monitor alerts go: the log, a webhook and Prometheus.

    alerts = AlertRouter(webhook_url="https://hooks.example.com/x", registry=gateway.metrics.registry)
    alerts.check("support-triage", result)    # a CheckResult: gauges updated; an alert when it starts alarming

An alert fires when a check goes from passing to alarming (not on every alarming window), and again only after
the check has passed once in between. Webhook POSTs are JSON: {"workload", "check", "p_value", "statistic",
"n", "detail", "at", "message"}; a failed POST is logged, never raised (the caller runs off the event loop).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tiergate.monitor.detector import CheckResult

log = logging.getLogger("tiergate.monitor")


class PrometheusSink:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        r = registry
        self.p_value = Gauge("tiergate_drift_p_value", "Latest p-value of a drift check", ["workload", "check"],
                             registry=r)
        self.statistic = Gauge("tiergate_drift_statistic", "Latest statistic of a drift check (MMD², chi², KS, "
                               "agreement, flagged share)", ["workload", "check"], registry=r)
        self.alarming = Gauge("tiergate_drift_alarm", "1 while a drift check alarms", ["workload", "check"],
                              registry=r)
        self.alerts = Counter("tiergate_drift_alerts", "Drift alerts raised", ["workload", "check"], registry=r)
        self.hallucinations = Counter("tiergate_hallucinations", "Small-model answers flagged, by check",
                                      ["workload", "tier", "check"], registry=r)
        self.checked = Counter("tiergate_answers_checked", "Small-model answers run through hallucination checks",
                               ["workload", "tier"], registry=r)

    def result(self, workload: str, r: CheckResult) -> None:
        if r.p_value is not None:
            self.p_value.labels(workload, r.kind).set(r.p_value)
        if r.statistic is not None:
            self.statistic.labels(workload, r.kind).set(r.statistic)
        self.alarming.labels(workload, r.kind).set(1 if r.alarm else 0)


class AlertRouter:
    def __init__(self, *, webhook_url: str | None = None, webhook_timeout_s: float = 5.0,
                 registry: Any = None) -> None:
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self.prometheus = PrometheusSink(registry) if registry is not None else None
        self.alarming: dict[tuple[str, str], bool] = {}
        self.sent: list[dict[str, Any]] = []

    def check(self, workload: str, result: CheckResult) -> dict[str, Any] | None:
        """Record a check result; returns the alert it raised, if any. Blocking (webhook): call off the loop."""
        if self.prometheus is not None:
            self.prometheus.result(workload, result)
        key = (workload, result.kind)
        was = self.alarming.get(key, False)
        self.alarming[key] = result.alarm
        if not result.alarm or was:
            return None
        alert = {"workload": workload, "check": result.kind, "p_value": result.p_value,
                 "statistic": result.statistic, "n": result.n, "detail": result.detail, "at": time.time(),
                 "message": _message(workload, result)}
        self.emit(alert)
        return alert

    def emit(self, alert: dict[str, Any]) -> None:
        log.warning("drift alert: %s", alert["message"])
        self.sent.append(alert)
        del self.sent[:-100]
        if self.prometheus is not None:
            self.prometheus.alerts.labels(alert["workload"], alert["check"]).inc()
        if self.webhook_url:
            import httpx

            try:
                resp = httpx.post(self.webhook_url, json=alert, timeout=self.webhook_timeout_s)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                log.error("drift alert webhook %s failed: %s", self.webhook_url, exc)

    def flagged(self, workload: str, tier: str, flags: list[str]) -> None:
        if self.prometheus is None:
            return
        self.prometheus.checked.labels(workload, tier).inc()
        for kind in sorted({f.split(":", 1)[0] for f in flags}):
            self.prometheus.hallucinations.labels(workload, tier, kind).inc()


def _message(workload: str, r: CheckResult) -> str:
    what = {"input": "input drift (MMD of input embeddings vs the training data)",
            "label": "label distribution drift (chi-square vs the training labels)",
            "confidence": "confidence drift (KS vs the baseline)",
            "quality": "quality drift (agreement with the frontier tier)",
            "hallucination": "hallucination rate over the limit"}.get(r.kind, r.kind)
    value = f"p={r.p_value:.4g}" if r.p_value is not None else f"value={r.statistic:.3f}"
    return f"{workload}: {what}, {value} over the last {r.n} requests"
