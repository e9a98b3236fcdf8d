"""Gateway overhead: the same load direct to a fast local OpenAI-compatible stub and through one gateway
process (capture on, key auth on), at 1 and 16 concurrent connections.

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 10] [--out benchmarks/results/gateway_overhead.json]

Targets (2-core machine): p50 overhead < 1 ms at concurrency 1; > 1,000 requests/s at concurrency 16 through
one gateway process; every request captured (checked by counting records after a graceful shutdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import percentile, run_load  # noqa: E402

from tiergate.store.db import open_store  # noqa: E402
from tiergate.store.keys import create_key  # noqa: E402
from tiergate.store.records import count_records  # noqa: E402
from tiergate.testing.stub_process import start_stub  # noqa: E402

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "Classify the support ticket into one queue."},
    {"role": "user", "content": "My card was charged twice for the same order, please refund one of them."}],
    "temperature": 0}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(res: dict, label: str) -> dict:
    lat = res["latencies"]
    return {"label": label, "requests": len(lat), "rps": len(lat) / res["elapsed_s"],
            "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
            "statuses": res["statuses"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--out", default="benchmarks/results/gateway_overhead.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    db_url = f"sqlite:///{tmp / 'capture.db'}"
    engine = open_store(db_url)
    _, key = create_key(engine, "bench")
    port = _free_port()
    results: dict = {"benchmark": "gateway_overhead", "machine": {"cpus": os.cpu_count(),
                     "python": platform.python_version(), "platform": platform.platform()},
                     "duration_s": args.duration, "runs": []}
    with start_stub() as stub:
        cfg = {"server": {"port": port, "log_level": "warning"}, "auth": {"require_key": True},
               "store": {"url": db_url},
               "tiers": {"frontier": {"kind": "upstream", "base_url": stub.base_url, "model": "gpt-4o-mini",
                                      "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}}},
               "models": {"gpt-4o-mini": "auto"}}
        (tmp / "gw.yaml").write_text(yaml.safe_dump(cfg))
        gw = subprocess.Popen([sys.executable, "-m", "tiergate", "serve", "-c", str(tmp / "gw.yaml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        gw_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {key}"}
            through = 0
            for c in args.concurrency:
                direct = _summary(run_load(stub.base_url + "/chat/completions", BODY, auth, concurrency=c,
                                           duration_s=args.duration), "direct")
                via_raw = run_load(gw_url, BODY, auth, concurrency=c, duration_s=args.duration)
                via = _summary(via_raw, "gateway")
                through += via["requests"] + via_raw["warmup_requests"]
                run = {"concurrency": c, "direct": direct, "gateway": via,
                       "p50_overhead_ms": via["p50_ms"] - direct["p50_ms"],
                       "p99_overhead_ms": via["p99_ms"] - direct["p99_ms"]}
                results["runs"].append(run)
                print(f"c={c:>3}  direct p50 {direct['p50_ms']:.3f} ms p99 {direct['p99_ms']:.3f} ms "
                      f"{direct['rps']:.0f} rps | gateway p50 {via['p50_ms']:.3f} ms p99 {via['p99_ms']:.3f} ms "
                      f"{via['rps']:.0f} rps | overhead p50 {run['p50_overhead_ms']:.3f} ms "
                      f"p99 {run['p99_overhead_ms']:.3f} ms", flush=True)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=120)
    # warm-up requests went through the gateway too: count what the load generator saw succeed
    captured = count_records(engine)
    ok = count_records(engine, status="ok")
    results["sent_through_gateway"] = through
    results["captured_records"] = captured
    results["captured_ok"] = ok
    print(f"sent {through} requests through the gateway; captured {captured} records ({ok} ok) "
          "after graceful shutdown")
    c1 = next((r for r in results["runs"] if r["concurrency"] == 1), None)
    c16 = next((r for r in results["runs"] if r["concurrency"] == 16), None)
    results["targets"] = {
        "p50_overhead_ms_c1_under_1": c1 is not None and c1["p50_overhead_ms"] < 1.0,
        "rps_c16_over_1000": c16 is not None and c16["gateway"]["rps"] > 1000,
        "every_request_captured": captured == through,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}: targets {results['targets']}")


if __name__ == "__main__":
    main()
