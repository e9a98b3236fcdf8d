"""The monitor in a real gateway: real MiniLM embeddings of CLINC150 queries, a real webhook receiver, the
store, Prometheus and `tiergate monitor status`. Traffic moves from the reference domain to another; the input
drift alarm fires, the webhook gets the alert, answers outside the label set are counted per tier."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import shared_data
from tests.test_rollout_gateway import on_loop, settle
from tiergate.monitor.config import MonitorConfig
from tiergate.monitor.monitor import Monitor
from tiergate.rollout.serve import with_rollout
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub

pytestmark = pytest.mark.slow


def cli_app() -> Any:
    """The `tiergate` app, with the rollout commands registered if the CLI does not list them yet."""
    from tiergate.cli import build_app
    from tiergate.cli.rollout import register

    app = build_app()
    if "monitor" not in {g.name for g in app.registered_groups}:
        register(app)
    return app


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def clinc(domain_names: list[str], split: str) -> list[tuple[str, str]]:
    root = shared_data("clinc150")
    data = json.loads((root / "data_full.json").read_text())
    domains = json.loads((root / "domains.json").read_text())
    wanted = {i for d in domain_names for i in domains[d]}
    rows = [(t, i) for t, i in data[split] if i in wanted]
    random.Random(0).shuffle(rows)  # the files are grouped by intent; live traffic is not
    return rows


def test_input_drift_alarm_webhook_metrics_and_cli(tmp_path: Path, webhook: Any) -> None:
    url, received = webhook
    train = clinc(["banking"], "train")  # the training domain: label shares; 150 sampled for embeddings
    ref_path = tmp_path / "train.jsonl"
    ref_path.write_text("".join(json.dumps({"input": t, "output": i}) + "\n" for t, i in train))
    live = clinc(["banking"], "test")[:40]
    shifted = clinc(["travel", "kitchen_and_dining"], "test")[:60]
    answers = {t: i for t, i in live}  # in-domain answers are labels; the rest get a made-up answer
    monitor_raw = {
        "window": 20, "step": 10, "alpha": 0.01, "permutations": 200, "reference_size": 150,
        "webhook_url": url,
        "workloads": {"intents": {"reference": str(ref_path), "tiers": ["small"]}},
    }
    monitor_cfg = MonitorConfig.model_validate(monitor_raw)
    with start_stub(model="small", answers=answers) as small:
        cfg = {"auth": {"require_key": False, "admin_token": "adm"},
               "store": {"url": f"sqlite:///{tmp_path / 'm.db'}", "flush_interval_ms": 1},
               "tiers": {"small": {"kind": "upstream", "base_url": small.base_url, "zone": "on_prem"}},
               "workloads": {"intents": {"task": "classification", "tier": "small"}},
               "monitor": monitor_raw}
        with run_gateway(cfg) as gw:
            with_rollout(gw.app, monitor_cfg)
            monitor: Monitor = gw.app.state.monitor
            client = httpx.Client(base_url=gw.url, timeout=30, trust_env=False)

            def send(rows: list[tuple[str, str]]) -> None:
                for text, _ in rows:
                    r = client.post("/v1/chat/completions", headers={"X-Tiergate-Workload": "intents"},
                                    json={"model": "auto", "messages": [{"role": "user", "content": text}]})
                    assert r.status_code == 200
                settle(gw)
                on_loop(gw, monitor.close(), timeout=120)

            send(live)
            status = monitor.status()["workloads"]["intents"]
            assert status["checks"]["input"]["n"] == 20 and not status["checks"]["input"]["alarm"]
            assert status["hallucinations"]["small"] == {"checked": 40}
            assert not received
            send(shifted)
            status = monitor.status()["workloads"]["intents"]
            assert "input" in status["alarming"], status["checks"]
            assert status["hallucinations"]["small"]["label_outside_set"] == 60
            metrics = client.get("/metrics").text
            admin = client.get("/admin/monitor", headers={"Authorization": "Bearer adm"}).json()
    alerts = {a["check"]: a for a in received}
    assert "input" in alerts and alerts["input"]["workload"] == "intents" and alerts["input"]["p_value"] <= 0.01
    assert len([a for a in received if a["check"] == "input"]) == 1  # one alert per alarm episode
    assert 'tiergate_drift_alerts_total{check="input",workload="intents"} 1.0' in metrics
    assert 'tiergate_hallucinations_total{check="label_outside_set",tier="small",workload="intents"} 60.0' in metrics
    assert admin["stored"]["intents"]["input"]["alarm"] is True

    result = CliRunner().invoke(cli_app(), ["monitor", "status", "--db", f"sqlite:///{tmp_path / 'm.db'}",
                                              "--json"])
    assert result.exit_code == 0, result.output
    stored = json.loads(result.output)["intents"]
    assert stored["input"]["alarm"] is True and stored["input"]["alarms_24h"] >= 1
    assert stored["hallucination"]["alarm"] is True
    assert stored["hallucination"]["detail"]["by_tier"]["small"]["label_outside_set"] == 60
