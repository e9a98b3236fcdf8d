"""`make demo`: the migration story on embedded defaults (SQLite, the bundled SmolLM2, no API key).

Step 1 (capture): start the gateway, send real requests through it with the `openai` client, show what was
captured and how to point your own client at it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

console = Console()

PROMPTS = [
    ("support-triage", "Classify this ticket as billing, technical or account: 'I was charged twice this month.'"),
    ("support-triage", "Classify this ticket as billing, technical or account: 'The app crashes when I log in.'"),
    ("routine-replies", "Write a one-sentence polite reply confirming we received the customer's refund request."),
]


def _step(n: int, title: str) -> None:
    console.rule(f"[bold cyan]Step {n}: {title}")


def capture(out: Path) -> None:
    import openai

    from tiergate.config import load_config
    from tiergate.store.records import query_records
    from tiergate.testing.gateway import run_gateway

    cfg = load_config(None)
    cfg.store.url = f"sqlite:///{out / 'tiergate.db'}"
    cfg.store.spill_path = str(out / "tiergate-spill.jsonl")
    tiers = ", ".join(f"{n} ({t.kind}, {t.zone})" for n, t in cfg.tiers.items())
    console.print(f"tiers: {tiers}\nstore: {cfg.store.url}")
    if "frontier" not in cfg.tiers:
        console.print("[dim]no upstream tier: set OPENAI_API_KEY and OPENAI_BASE_URL (or TIERGATE_UPSTREAM_BASE_URL)"
                      " to add a frontier tier[/]")
    t0 = time.perf_counter()
    console.print("starting the gateway (first start converts the bundled GGUF once, then uses the cache)…")
    with run_gateway(cfg) as gw:
        console.print(f"gateway up at {gw.base_url} in {time.perf_counter() - t0:.1f}s")
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        table = Table("workload", "tier", "route", "cost $", "ms", "answer", title="requests through the gateway")
        for workload, prompt in PROMPTS:
            t = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=40, temperature=0,
                extra_headers={"X-Tiergate-Workload": workload})
            answer = raw.parse().choices[0].message.content or ""
            table.add_row(workload, raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-route-reason"],
                          raw.headers["x-tiergate-cost-usd"], f"{(time.perf_counter() - t) * 1000:.0f}",
                          answer.strip().replace("\n", " ")[:70])
        # and one streamed answer
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Say hello to a new customer in five words."}],
            max_tokens=20, stream=True, stream_options={"include_usage": True})
        text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
        table.add_row("default", "local", "stream", "-", "-", text.strip().replace("\n", " ")[:70])
        console.print(table)
        import asyncio

        asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), gw.gateway.writer._task.get_loop()).result(30)
        rows = query_records(gw.gateway.engine, limit=10)
    cap = Table("request", "workload", "tier", "reason", "tokens in/out", "cost $", "status", title="captured records")
    for r in reversed(rows):
        cap.add_row(r["request_id"][:16], r["workload"], r["tier"], r["route_reason"],
                    f"{r['prompt_tokens']}/{r['completion_tokens']}", f"{r['cost_usd']:.8f}", r["status"])
    console.print(cap)


def main() -> None:
    out = Path(os.environ.get("TIERGATE_DEMO_DIR", "demo-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit("tiergate demo: capture → (train → evaluate → shadow → cut over) → account",
                            style="bold"))
    _step(1, "capture traffic through the OpenAI-compatible gateway")
    capture(out)
    console.print(Panel(
        "Point your own client at tiergate:\n"
        f"  tiergate keys create my-app --db sqlite:///{out / 'tiergate.db'}\n"
        f"  tiergate serve --db sqlite:///{out / 'tiergate.db'}            # http://127.0.0.1:8080/v1\n"
        "  OpenAI(base_url='http://127.0.0.1:8080/v1', api_key='tg-…')  # model='auto', header X-Tiergate-Workload\n"
        f"  tiergate logs --db sqlite:///{out / 'tiergate.db'}             # what was captured\n"
        "Configure tiers, prices and routing with a YAML file: see examples/tiergate.yaml.",
        title="next", style="green"))


if __name__ == "__main__":
    sys.exit(main())
