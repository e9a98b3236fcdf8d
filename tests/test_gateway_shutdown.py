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

from tests.routing_support import classifier  # noqa: F401  (the session's trained classifier, a fixture)
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


def _serve(tmp_path: Path, cfg: dict[str, object]) -> tuple[subprocess.Popen[bytes], str]:
    """`tiergate serve` as a process, once it answers /healthz."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tiergate", "serve", "-c", str(tmp_path / "c.yaml")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{cfg['server']['port']}"  # type: ignore[index]
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("gateway did not start")
        time.sleep(0.1)


def test_requests_still_running_when_the_grace_ends_get_503_and_a_reason(tmp_path: Path) -> None:
    """uvicorn cancels what is still running when its shutdown grace ends; the gateway ends those requests itself
    just before: 503 in OpenAI's shape (an error event for a stream that has begun) and records that say why."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with start_stub() as stub:
        cfg = {"server": {"port": _free_port(), "shutdown_grace_s": 2, "log_level": "warning"},
               "auth": {"require_key": False}, "store": {"url": url},
               "tiers": {"up": {"kind": "upstream", "base_url": stub.base_url, "price": {"input_per_mtok": 1},
                                "timeout": {"read": 60}, "retry": {"max_attempts": 1}}}}
        proc, base = _serve(tmp_path, cfg)
        try:
            async def run() -> tuple[list[httpx.Response], list[str]]:
                async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                    msg = {"model": "up", "messages": [{"role": "user", "content": "slow one"}]}
                    stub.control(stall={"count": 2, "seconds": 30})
                    plain = [asyncio.create_task(client.post("/v1/chat/completions", json=msg)) for _ in range(2)]
                    while len(stub.requests()) < 2:
                        await asyncio.sleep(0.05)
                    stub.control(stall={"count": 1, "seconds": 30, "after_chunks": 2})

                    async def stream() -> str:
                        async with client.stream("POST", "/v1/chat/completions", json={**msg, "stream": True}) as r:
                            assert r.status_code == 200
                            text = ""
                            async for line in r.aiter_lines():
                                text += line + "\n"
                                if "stub" in text and proc.poll() is None and "sent" not in text:
                                    text += "sent\n"
                                    proc.send_signal(signal.SIGTERM)  # mid-stream, the others still waiting
                            return text

                    streamed = await stream()
                    return list(await asyncio.gather(*plain)), [streamed]

            t0 = time.monotonic()
            answers, streams = asyncio.run(run())
            assert time.monotonic() - t0 < 15
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
    for r in answers:
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "shutting_down"
    assert '"code":"shutting_down"' in streams[0]
    engine = open_store(url)
    from tiergate.store.records import query_records

    rows = query_records(engine, limit=None)
    engine.dispose()
    assert len(rows) == 3
    for rec in rows:
        assert (rec["status"], rec["http_status"]) == ("error", 503), rec
        assert "shutting down" in rec["error"] and rec["latency_ms"] > 1000
    streamed = next(r for r in rows if r["stream"])
    assert streamed["answer"].startswith("stub") and streamed["prompt_tokens"] > 0


def test_two_encoder_tiers_load_side_by_side(tmp_path: Path, classifier: Path) -> None:  # noqa: F811
    """Tiers load on worker threads at once; the first resolution of transformers' lazy names is not thread-safe,
    and two classifier tiers in a fresh process failed to start with ImportError."""
    model = str(classifier)
    cfg = {"server": {"port": _free_port(), "log_level": "warning"}, "auth": {"require_key": False},
           "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
           "tiers": {"a": {"kind": "classifier", "model": model, "device": "cpu"},
                     "b": {"kind": "classifier", "model": model, "device": "cpu"}},
           "routing": {"default_tier": "a"}}
    proc, base = _serve(tmp_path, cfg)
    try:
        r = httpx.post(base + "/v1/chat/completions", timeout=60,
                       json={"model": "b", "messages": [{"role": "user", "content": "where is my card"}]})
        assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "b"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_a_tier_that_cannot_load_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """`tiergate serve` with a local tier whose model cannot load printed a 129-line traceback; uvicorn now logs
    the reason tiergate gives, in one line."""
    import asyncio

    from tiergate.config import parse_config
    from tiergate.gateway.app import create_app
    from tiergate.gateway.server import _one_line_startup_errors

    (tmp_path / "empty-model").mkdir()
    config = parse_config({"store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
                           "tiers": {"local": {"kind": "local_lm", "model": str(tmp_path / "empty-model")}}})
    app = _one_line_startup_errors(create_app(config))
    sent: list[dict] = []

    async def run() -> None:
        inbox: asyncio.Queue[dict] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def send(message: dict) -> None:
            sent.append(message)

        with pytest.raises(Exception):  # noqa: B017  (Starlette re-raises after reporting)
            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)

    asyncio.run(run())
    failed = [m for m in sent if m["type"] == "lifespan.startup.failed"]
    assert failed and failed[0]["message"].startswith("cannot start: cannot load model")
    assert "Traceback" not in failed[0]["message"]
