"""`make demo`: the migration story on embedded defaults (SQLite, the bundled models, no API key).

1. capture: the gateway on embedded defaults (the bundled SmolLM2 as the local tier); real requests through it
   with the `openai` client; what was captured; how to point your own client at it.
2. train and evaluate: a small classifier fine-tuned on CLINC150 intents (from ../shared/data) and scored side by
   side with the general model (SmolLM2 zero-shot) by the one evaluation harness.
3. cut over: the classifier shadows a frontier tier (a local OpenAI-compatible stand-in, priced as gpt-4o-mini),
   advances 10% -> 50% -> 100% through the gates, then traffic drifts: the agreement gate rolls the rollout back
   by itself and the drift monitor reports the shift; the spend report shows the cost against the all-frontier
   counterfactual.
4. the 3-year TCO of the published document-classification scenario.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tiergate.costs.spend_render import usd

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
                    f"{r['prompt_tokens']}/{r['completion_tokens']}", usd(r["cost_usd"]), r["status"])
    console.print(cap)


def train_and_evaluate(out: Path, data_dir: Path, n_eval: int) -> Path:
    from tiergate.config import LocalLMTierConfig, PriceConfig
    from tiergate.data import Dataset, Example, write_jsonl
    from tiergate.evaluate.harness import EvalOptions, evaluate_tier, resolve_tier
    from tiergate.evaluate.report import html_report
    from tiergate.rollout.demo import KNOWN, _clinc, _rows, _train
    from tiergate.tiers.local_lm import LocalLMTier

    data, domains = _clinc(data_dir)
    counts: dict[str, int] = {}
    train = []
    for t, i in _rows(data, domains, KNOWN, "train", 0):
        if counts.get(i, 0) < 30:
            counts[i] = counts.get(i, 0) + 1
            train.append((t, i))
    model_dir = _train(out, train, console)
    test = Dataset([Example(t, i) for t, i in _rows(data, domains, KNOWN, "test", 3)[:n_eval]], "classification")
    write_jsonl(test, out / "test.jsonl")
    small = resolve_tier(str(model_dir), name="fine-tuned-minilm")
    # one CPU at $0.10/h for both, at the throughputs the cutover step's tier and the embedded defaults assume
    small.config.price = PriceConfig(hourly_usd=0.10, throughput_rps=50)
    general = LocalLMTier("smollm2-zero-shot", LocalLMTierConfig(kind="local_lm", max_new_tokens=12,
                                                                  price={"hourly_usd": 0.10, "throughput_rps": 5}))

    reports = []
    for tier, opts in ((small, EvalOptions(concurrency=8)), (general, EvalOptions(concurrency=4, max_tokens=12))):
        reports.append(evaluate_tier(tier, test, opts))
    table = Table("tier", "accuracy", "macro-F1", "p50 ms", "p95 ms", "$ / 1k requests",
                  title=f"the same {len(test)} CLINC150 test queries ({len(set(counts))} intents), one harness")
    for r in reports:
        m = r.metrics
        table.add_row(r.tier, f"{m.get('accuracy', 0):.1%}", f"{m.get('macro_f1', 0):.3f}",
                      f"{m.get('latency_ms_p50', 0):.1f}", f"{m.get('latency_ms_p95', 0):.1f}",
                      usd(m.get("cost_per_1k_usd")))
    console.print(table)
    (out / "evaluation.html").write_text(html_report(reports, "fine-tuned classifier vs general model"))
    console.print(f"side-by-side report: {out / 'evaluation.html'}")
    return model_dir


def main() -> None:
    out = Path(os.environ.get("TIERGATE_DEMO_DIR", "demo-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("TIERGATE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    console.print(Panel.fit("tiergate demo: capture → train → evaluate → shadow → cut over → account", style="bold"))
    _step(1, "capture traffic through the OpenAI-compatible gateway")
    capture(out)
    if not (data_dir / "clinc150" / "data_full.json").is_file():
        console.print(f"[yellow]{data_dir}/clinc150 not found: skipping the training and cutover steps "
                      "(set TIERGATE_DATA_DIR to the folder holding clinc150/)[/]")
    else:
        _step(2, "train a small model and evaluate it beside the general model")
        model_dir = train_and_evaluate(out, data_dir, int(os.environ.get("TIERGATE_DEMO_EVAL_N", "60")))
        _step(3, "shadow, staged cutover, drift and automatic rollback, the cost saved")
        from tiergate.rollout.demo import cutover_demo

        cutover_demo(out / "cutover", console, data_dir=data_dir, model=model_dir)
    _step(4, "3-year TCO: frontier API against a fine-tuned small model")
    from tiergate.costs.tco_report import run_scenario

    scenario = Path(__file__).resolve().parents[1] / "examples" / "tco" / "document-classification.yaml"
    if scenario.is_file():
        report = run_scenario(scenario)
        for name, path in report["paths"].items():
            console.print(f"  {name}: ${path['monthly_usd']:,.0f}/month, ${path['total_usd']:,.0f} over 3 years")
        console.print(f"  savings {report['savings_pct']:.1f}%, break-even at "
                      f"{report['break_even_monthly_volume']:,.0f} requests/month "
                      f"(tiergate tco --scenario {scenario.relative_to(Path.cwd()) if scenario.is_relative_to(Path.cwd()) else scenario})")
    console.print(Panel(
        "Point your own client at tiergate:\n"
        f"  tiergate keys create my-app --db sqlite:///{out / 'tiergate.db'}\n"
        f"  tiergate serve --db sqlite:///{out / 'tiergate.db'}            # http://127.0.0.1:8080/v1\n"
        "  OpenAI(base_url='http://127.0.0.1:8080/v1', api_key='tg-…')  # model='auto', header X-Tiergate-Workload\n"
        f"  tiergate logs --db sqlite:///{out / 'tiergate.db'}             # what was captured\n"
        "  TIERGATE_ADMIN_TOKEN=… tiergate serve …, then open http://127.0.0.1:8080/dashboard  # the dashboard\n"
        "Configure tiers, prices and routing with a YAML file: see examples/tiergate.yaml.",
        title="next", style="green"))


if __name__ == "__main__":
    sys.exit(main())
