"""No record lost: 1,000 concurrent requests, a graceful shutdown (SIGTERM) while they are in flight, and a
capture queue far smaller than the load (backpressure). Runs `tiergate serve` as a real process, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tiergate.store.db import open_store
from tiergate.store.keys import create_key
from tiergate.store.records import count_records
from tiergate.testing.stub_process import start_stub

N = 1000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_record_lost_on_graceful_shutdown(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_store(url)
    _, key = create_key(engine, "load")
    port = _free_port()
    with start_stub(latency_ms=400) as stub:
        cfg = {
            "server": {"port": port, "shutdown_grace_s": 60, "log_level": "warning"},
            "store": {"url": url, "queue_size": 16, "batch_size": 64, "spill_path": str(tmp_path / "spill.jsonl")},
            "tiers": {"up": {"kind": "upstream", "base_url": stub.base_url, "price": {"input_per_mtok": 1},
                             "max_connections": 2000, "timeout": {"read": 30}}},
        }
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tiergate", "serve", "-c", str(tmp_path / "c.yaml")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)

            async def load() -> list[int]:
                limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
                async with httpx.AsyncClient(limits=limits, timeout=60) as client:
                    async def one(i: int) -> int:
                        r = await client.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                              json={"model": "up", "messages": [{"role": "user", "content": f"m{i}"}]})
                        return r.status_code

                    tasks = [asyncio.create_task(one(i)) for i in range(N)]
                    # SIGTERM once every request has reached the upstream: all are in flight in the gateway
                    t0 = time.monotonic()
                    while len(stub.requests()) < N and time.monotonic() - t0 < 60:
                        await asyncio.sleep(0.05)
                    proc.send_signal(signal.SIGTERM)
                    return await asyncio.gather(*tasks)

            statuses = asyncio.run(load())
            # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit
            assert proc.wait(timeout=90) in (0, -signal.SIGTERM), proc.stdout.read().decode()  # type: ignore[union-attr]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert statuses.count(200) == N, {s: statuses.count(s) for s in set(statuses)}
    assert count_records(engine) == N
    assert count_records(engine, status="ok") == N
    assert not (tmp_path / "spill.jsonl").exists()
    engine.dispose()
