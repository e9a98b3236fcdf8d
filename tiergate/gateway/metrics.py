"""Prometheus metrics, one registry per gateway (no module globals).

Workload names come from callers (`X-Tiergate-Workload`, `metadata.workload`), so a metric labelled by workload
would grow a series per name anyone sends: a few thousand made-up names make /metrics megabytes long and the
process, and the Prometheus that scrapes it, hold millions of series. The workloads the configuration names
always have their own label; of the others, the first `max_other_workloads` seen do too, and the rest share
`OTHER_WORKLOAD`. The capture store keeps every record's exact workload either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("tiergate.gateway")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1)

OTHER_WORKLOAD = "_other"
"""The workload label of requests whose workload is neither configured nor among the first unconfigured ones."""
MAX_OTHER_WORKLOADS = 50
"""Unconfigured workload names that get a label of their own (first seen, first labelled)."""


class _ByWorkload:
    """A metric whose first label is the workload, bounded by its `Metrics`; everything else is the metric's."""

    def __init__(self, metric: Any, owner: Metrics) -> None:
        self._metric = metric
        self._owner = owner

    def labels(self, *values: Any, **kw: Any) -> Any:
        if values:
            values = (self._owner.workload_label(str(values[0])), *values[1:])
        elif "workload" in kw:
            kw["workload"] = self._owner.workload_label(str(kw["workload"]))
        return self._metric.labels(*values, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


class Metrics:
    def __init__(self, workloads: Iterable[str] = (), *, max_other_workloads: int = MAX_OTHER_WORKLOADS) -> None:
        self.known_workloads: set[str] = set(workloads)
        self.max_other_workloads = max_other_workloads
        self._others: set[str] = set()
        self._overflowed = False
        r = self.registry = CollectorRegistry()
        self.requests = _ByWorkload(Counter("tiergate_requests", "Requests answered", ["workload", "tier", "status"],
                                            registry=r), self)
        self.latency = _ByWorkload(Histogram("tiergate_request_latency_seconds", "Request latency in the gateway",
                                             ["workload", "tier"], buckets=_LATENCY_BUCKETS, registry=r), self)
        self.tokens = _ByWorkload(Counter("tiergate_tokens", "Tokens by direction", ["workload", "tier", "direction"],
                                          registry=r), self)
        self.cost = _ByWorkload(Counter("tiergate_cost_usd", "Spend in USD", ["workload", "tier", "role"],
                                        registry=r), self)
        self.decision = _ByWorkload(Histogram("tiergate_route_decision_seconds", "Routing decision overhead",
                                              ["workload"], buckets=_DECISION_BUCKETS, registry=r), self)
        self.route_reasons = _ByWorkload(Counter("tiergate_route_decisions", "Route decisions by reason",
                                                 ["workload", "tier", "reason"], registry=r), self)
        self.tier_failures = Counter("tiergate_tier_failures", "Tier calls that failed", ["tier", "error"], registry=r)
        self.fallbacks = Counter("tiergate_fallbacks", "Requests answered by a fallback tier",
                                 ["from_tier", "to_tier"], registry=r)
        self.breaker_open = Gauge("tiergate_circuit_open", "1 while a tier's circuit breaker is open", ["tier"],
                                  registry=r)
        self.shadow_skipped = _ByWorkload(Counter("tiergate_shadow_skipped",
                                                  "Shadow calls skipped: all shadow slots busy",
                                                  ["workload", "tier"], registry=r), self)
        self.errors = Counter("tiergate_errors", "Error responses by HTTP status (499: the client left before "
                                                  "its answer)", ["status"], registry=r)
        self.inflight = Gauge("tiergate_inflight_requests", "Requests in flight", registry=r)
        self.queue_depth = Gauge("tiergate_writer_queue_depth", "Captured records waiting to be written", registry=r)
        self.records_written = Counter("tiergate_records_written", "Captured records written to the store",
                                       registry=r)
        self.records_spilled = Gauge("tiergate_records_spilled", "Records kept in the spill file", registry=r)

    def workload_label(self, workload: str) -> str:
        """The label a workload's series carry: its name when configured or among the first unconfigured names,
        `OTHER_WORKLOAD` otherwise."""
        if workload in self.known_workloads or workload in self._others:
            return workload
        if len(self._others) < self.max_other_workloads:
            self._others.add(workload)
            return workload
        if not self._overflowed:
            self._overflowed = True
            log.warning("more than %d unconfigured workload names seen: the metrics label the rest %r and the monitor "
                        "does not watch them (records keep their names)", self.max_other_workloads, OTHER_WORKLOAD)
        return OTHER_WORKLOAD

    def bind_writer(self, depth: Callable[[], float], spilled: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)
        self.records_spilled.set_function(spilled)

    def render(self) -> bytes:
        return generate_latest(self.registry)
