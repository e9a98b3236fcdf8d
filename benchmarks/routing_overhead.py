"""Routing decision overhead on CPU: rules, privacy, the boundary (MiniLM embedding distance, and optionally a
trained classifier's embedding and confidence) and the learned router, on real BANKING77 test queries.

    .venv/bin/python benchmarks/routing_overhead.py [--data-dir ../shared/data] [--n 500]
        [--boundary-classifier benchmarks/models/clinc150-boundary]

Each prompt is decided once, uncached (embedding routers see each text for the first time: the shared
embedding cache is cleared before each router), by calling the router's `decide` (rules, privacy: what the event
loop spends) and, for the embedding routers, `decide` and `adecide` from an asyncio loop (the hop to the
router's one-thread torch worker included), then once more cached. The learned router and embedding boundary are fitted
here on BANKING77 training queries (their weights do not change their cost). Targets: p50 < 2 ms for rules and
privacy, < 15 ms for embedding-based routers. Wall-clock and CPU time are both recorded: on a shared machine the
wall-clock p50 includes waiting for a core (the load average is saved beside them).
Saves benchmarks/results/routing_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RULES = [
    {"name": "long-context", "tier": "frontier", "min_tokens": 1500},
    {"name": "legal", "tier": "frontier", "keywords_any": ["contract", "lawsuit", "governing law", "indemnity"]},
    {"name": "complaint", "tier": "frontier", "keywords_all": ["complaint", "formal"]},
    {"name": "order-id", "tier": "local", "regex": r"\bORD-\d{6}\b", "ignore_case": False},
    {"name": "code", "tier": "frontier", "regex": [r"```", r"\bdef \w+\(", r"\bSELECT\b.*\bFROM\b"]},
    {"name": "structured", "tier": "local", "json_schema": True, "max_messages": 2},
    {"name": "tools", "tier": "frontier", "tools": True},
    {"name": "multi-turn", "tier": "frontier", "min_messages": 6},
    {"name": "cards", "tier": "local", "keywords_any": ["card", "pin", "atm", "top up", "top-up"]},
    {"name": "short", "tier": "local", "max_tokens": 8},
]


def read_texts(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    q = statistics.quantiles(s, n=100)
    return {"n": len(s), "p50_ms": round(statistics.median(s), 4), "p95_ms": round(q[94], 4),
            "p99_ms": round(q[98], 4), "mean_ms": round(statistics.fmean(s), 4), "max_ms": round(s[-1], 4)}


CPU_MS: list[float] = []
"""CPU time (all threads of this process) of each decision timed last: the work itself, without the time spent
waiting for a core on a shared machine."""


def time_sync(router: Any, reqs: list[Any]) -> list[float]:
    out = []
    CPU_MS.clear()
    for req in reqs:
        c0, t0 = time.process_time(), time.perf_counter()
        router.decide(req)
        out.append((time.perf_counter() - t0) * 1000)
        CPU_MS.append((time.process_time() - c0) * 1000)
    return out


def time_async(router: Any, reqs: list[Any]) -> list[float]:
    async def run() -> list[float]:
        out = []
        CPU_MS.clear()
        for req in reqs:
            c0, t0 = time.process_time(), time.perf_counter()
            await router.adecide(req)
            out.append((time.perf_counter() - t0) * 1000)
            CPU_MS.append((time.process_time() - c0) * 1000)
        return out

    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--n", type=int, default=500, help="prompts timed per router")
    p.add_argument("--boundary-classifier", default=None,
                   help="a boundary artifact fitted on a classifier (e.g. benchmarks/models/clinc150-boundary)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()

    import torch
    from _common import data_dir  # type: ignore[import-not-found]

    from tiergate.routing.base import RouteRequest, RoutingContext
    from tiergate.routing.boundary import BoundaryFitOptions, BoundaryRouter, fit_boundary
    from tiergate.routing.embeddings import shared_embedders
    from tiergate.routing.learned import LearnedRouter, LearnedTrainOptions, train_learned_router
    from tiergate.routing.outcomes import Outcome, Outcomes
    from tiergate.routing.privacy import PrivacyRouter
    from tiergate.routing.rules import RulesRouter

    root = data_dir(args.data_dir) / "banking77"
    train, test = read_texts(root / "train.csv"), read_texts(root / "test.csv")
    # the second half of the test queries; a fifth of them carry personal data, as a guard would see
    prompts = test[1000:1000 + args.n]
    pii = ["my email is jo.smith@example.com", "card 4111 1111 1111 1111", "call me on +44 20 7946 0958",
           "IBAN GB82 WEST 1234 5698 7654 32", "my name is Jane Doe"]
    prompts = [t + (" " + pii[i % len(pii)] if i % 5 == 0 else "") for i, t in enumerate(prompts)]
    reqs = [RouteRequest({"model": "auto", "messages": [{"role": "system", "content": "You are a banking support "
                                                         "triage assistant."},
                                                        {"role": "user", "content": t}]}, "bench") for t in prompts]
    tiers = {"local": type("T", (), {"zone": "on_prem"})(), "frontier": type("T", (), {"zone": "external"})()}
    ctx = RoutingContext(tiers=tiers, workload="bench")
    results: dict[str, Any] = {}

    rules = RulesRouter(RulesRouter.Options(rules=RULES), ctx)  # type: ignore[call-arg]
    privacy = PrivacyRouter(PrivacyRouter.Options(tier="local"), ctx)  # type: ignore[call-arg]
    for r in (rules, privacy):
        time_sync(r, reqs[:50])  # warm caches of the interpreter
        results[r.kind] = {"decide": stats(time_sync(r, reqs)), "decide_cpu": stats(CPU_MS),
                           "decided_share": sum(r.decide(q) is not None for q in reqs) / len(reqs)}
        print(r.kind, json.dumps(results[r.kind]), flush=True)

    # the embedding forward itself, float and int8 (what `quantize` trades), on the one-thread worker
    from tiergate.routing.embeddings import Embedder

    for label, quantize in (("embedder_fp32", False), ("embedder_int8", True)):
        emb = Embedder(cache_size=0, quantize=quantize)
        emb.encode_one("warm up")
        wall, cpu = [], []
        for t in prompts[:100]:
            c0, t0 = time.process_time(), time.perf_counter()
            emb.encode_one(t)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        results[label] = {"encode_one": stats(wall), "encode_one_cpu": stats(cpu)}
        print(label, json.dumps(results[label]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        fit_texts = train[:2000]
        t0 = time.perf_counter()
        boundary = fit_boundary(fit_texts, train[2000:2500], BoundaryFitOptions(signals=["knn"]))
        boundary.save(Path(tmp) / "boundary")
        # outcomes whose labels do not matter for latency: long queries "need" the large tier
        rows = [Outcome(t, {"small": 0.0 if len(t) > 60 else 1.0, "large": 1.0}) for t in train[2500:3500]]
        learned = train_learned_router(Outcomes(rows, ["small", "large"]), LearnedTrainOptions(C=1.0))
        learned.save(Path(tmp) / "learned")
        fit_s = time.perf_counter() - t0
        routers = {
            "boundary_embedding": BoundaryRouter(BoundaryRouter.Options(path=str(Path(tmp) / "boundary"),  # type: ignore[call-arg]
                                                                        escalate_to="frontier"), ctx),
            "learned": LearnedRouter(LearnedRouter.Options(path=str(Path(tmp) / "learned"), small="local",  # type: ignore[call-arg]
                                                           large="frontier"), ctx),
        }
        if args.boundary_classifier:
            routers["boundary_classifier"] = BoundaryRouter(BoundaryRouter.Options(  # type: ignore[call-arg]
                path=str(Path(args.boundary_classifier).resolve()), escalate_to="frontier"), ctx)
        half = len(reqs) // 2
        for name, r in routers.items():
            for emb in shared_embedders():
                emb.cache.clear()  # every router sees the prompts for the first time
            asyncio.run(r.start())
            warm = [RouteRequest({"messages": [{"role": "user", "content": f"warm up {i}"}]}, "b") for i in range(20)]
            time_sync(r, warm)
            sync_ms = time_sync(r, reqs[:half])           # first sight of each text
            sync_cpu = list(CPU_MS)
            async_ms = time_async(r, reqs[half:])         # first sight too (other texts)
            async_cpu = list(CPU_MS)
            cached_ms = time_sync(r, reqs[:half])         # the same texts again: the LRU cache answers
            results[name] = {"decide_uncached": stats(sync_ms), "decide_uncached_cpu": stats(sync_cpu),
                             "adecide_uncached": stats(async_ms), "adecide_uncached_cpu": stats(async_cpu),
                             "decide_cached": stats(cached_ms)}
            print(name, json.dumps(results[name]), flush=True)

    targets = {"rules": 2.0, "privacy": 2.0, "boundary_embedding": 15.0, "learned": 15.0, "boundary_classifier": 15.0}
    checks = {}
    for name, limit in targets.items():
        if name in results:
            key = "decide" if name in ("rules", "privacy") else "decide_uncached"
            cpu = "decide_cpu" if name in ("rules", "privacy") else "decide_uncached_cpu"
            checks[name] = {"p50_ms": results[name][key]["p50_ms"], "cpu_p50_ms": results[name][cpu]["p50_ms"],
                            "target_ms": limit, "met": results[name][key]["p50_ms"] < limit,
                            "met_on_cpu_time": results[name][cpu]["p50_ms"] < limit}
    out = {"benchmark": "routing_overhead", "prompts": len(reqs), "routers": results, "targets": checks,
           "all_met": all(c["met"] for c in checks.values()), "fit_s": round(fit_s, 1),
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "load_avg": os.getloadavg()}}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "routing_overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(checks, indent=2))
    print(f"saved {res / 'routing_overhead.json'}")


if __name__ == "__main__":
    main()
