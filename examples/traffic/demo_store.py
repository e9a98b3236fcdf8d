"""Write a week of demo traffic to a store, routed the way a migration in progress routes it.

    python examples/traffic/demo_store.py sqlite:///demo-traffic.db [--requests 7000] [--days 7] [--seed 42]

Content: `tiergate.testing.traffic.synthetic_traffic` (support tickets answered with labels, invoices answered
with JSON, review replies, one-off questions). Routing: the first three days everything goes to `frontier`;
from day four support-triage is answered by `small` with 6% escalated to `frontier` through a cascade (both
attempts recorded), invoice-extraction stays on `frontier` with `small` answering in the shadows, customer
replies move to `mini`, and one in ten one-off questions goes to `partner`, a model without a price.
Every cost is priced by the config's tiers (examples/traffic/tiergate.yaml), as the gateway prices them.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

from tiergate.config import load_config
from tiergate.costs.report import tier_pricers
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record
from tiergate.testing.traffic import synthetic_traffic

CONFIG = Path(__file__).with_name("tiergate.yaml")


def routed(rows: list[dict[str, Any]], pricers: dict[str, Any], seed: int, t0: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []

    def priced(rec: dict[str, Any], tier: str) -> dict[str, Any]:
        p = pricers[tier]
        return {**rec, "tier": tier, "cost_usd": None if p.unknown else p.cost(rec["prompt_tokens"], rec["completion_tokens"])}

    for rec in rows:
        kind = rec["planted"]
        rec = {**rec, "workload": "default" if kind == "noise" else kind}
        migrated = rec["created_at"] - t0 >= 3 * 86400
        if not migrated:
            out.append(priced(rec, "frontier"))
        elif kind == "support-triage" and rng.random() < 0.06:
            first = priced({**rec, "request_id": rec["request_id"] + "_first", "role": "cascade_first",
                            "parent_request_id": rec["request_id"], "route_reason": "cascade"}, "small")
            out += [first, priced({**rec, "route_reason": "cascade:escalated"}, "frontier")]
        elif kind == "support-triage":
            out.append(priced({**rec, "route_reason": "cascade:kept"}, "small"))
        elif kind == "invoice-extraction":
            out.append(priced(rec, "frontier"))
            out.append(priced({**rec, "request_id": rec["request_id"] + "_shadow", "role": "shadow",
                               "parent_request_id": rec["request_id"], "route_reason": "shadow"}, "small"))
        elif kind == "customer-replies":
            out.append(priced(rec, "mini"))
        else:
            out.append(priced(rec, "partner" if rng.random() < 0.1 else "frontier"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=7000)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    span = args.days * 86400
    t0 = time.time() - span
    rows = synthetic_traffic(args.requests, seed=args.seed, start=t0, span_s=span)
    records = routed(rows, tier_pricers(load_config(CONFIG)), args.seed, t0)
    engine = open_store(args.url)
    n = insert_records(engine, [normalize_record(r) for r in records])
    print(f"wrote {n} records ({args.requests} requests over {args.days:g} days) to {args.url}")


if __name__ == "__main__":
    main()
