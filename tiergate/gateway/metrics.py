"""Prometheus metrics, one registry per gateway (no module globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tiergate_requests", "Requests answered", ["workload", "tier", "status"], registry=r)
        self.latency = Histogram("tiergate_request_latency_seconds", "Request latency in the gateway",
                                 ["workload", "tier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tiergate_tokens", "Tokens by direction", ["workload", "tier", "direction"], registry=r)
        self.cost = Counter("tiergate_cost_usd", "Spend in USD", ["workload", "tier", "role"], registry=r)
        self.decision = Histogram("tiergate_route_decision_seconds", "Routing decision overhead",
                                  ["workload"], buckets=_DECISION_BUCKETS, registry=r)
        self.route_reasons = Counter("tiergate_route_decisions", "Route decisions by reason",
                                     ["workload", "tier", "reason"], registry=r)
        self.tier_failures = Counter("tiergate_tier_failures", "Tier calls that failed", ["tier", "error"], registry=r)
        self.fallbacks = Counter("tiergate_fallbacks", "Requests answered by a fallback tier",
                                 ["from_tier", "to_tier"], registry=r)
        self.breaker_open = Gauge("tiergate_circuit_open", "1 while a tier's circuit breaker is open", ["tier"],
                                  registry=r)
        self.shadow_skipped = Counter("tiergate_shadow_skipped", "Shadow calls skipped: all shadow slots busy",
                                      ["workload", "tier"], registry=r)
        self.errors = Counter("tiergate_errors", "Error responses by HTTP status (499: the client left before "
                                                  "its answer)", ["status"], registry=r)
        self.inflight = Gauge("tiergate_inflight_requests", "Requests in flight", registry=r)
        self.queue_depth = Gauge("tiergate_writer_queue_depth", "Captured records waiting to be written", registry=r)
        self.records_written = Counter("tiergate_records_written", "Captured records written to the store",
                                       registry=r)
        self.records_spilled = Gauge("tiergate_records_spilled", "Records kept in the spill file", registry=r)

    def bind_writer(self, depth: Callable[[], float], spilled: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)
        self.records_spilled.set_function(spilled)

    def render(self) -> bytes:
        return generate_latest(self.registry)
