"""Run the stub upstream (`tiergate.testing.stub_upstream`) as a real subprocess, for tests and benchmarks.

    with start_stub(answers={"hi": "hello"}) as stub:
        tier_config = {"kind": "upstream", "base_url": stub.base_url}
        stub.control(stall={"count": 1, "seconds": 2})
        assert stub.requests()[0]["body"]["model"] == "gpt-4o-mini"

    stub = stub_fixture(scope="module")      # in a test module: a pytest fixture named `stub`

The stub binds port 0 itself and reports the port it got, so parallel test runs never race for a port.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


class StubProcess:
    """A running stub subprocess and a small synchronous client for its control endpoints."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, tmpdir: str) -> None:
        self.proc, self.host, self.port = proc, host, port
        self.url = f"http://{host}:{port}"
        self.base_url = self.url + "/v1"
        self._finalizer = weakref.finalize(self, _terminate, proc, tmpdir)

    def __repr__(self) -> str:
        return f"StubProcess(url={self.url!r}, pid={self.proc.pid})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        with httpx.Client(trust_env=False, timeout=10.0) as client:
            resp = client.request(method, self.url + path, content=orjson.dumps(body) if body is not None else None)
            resp.raise_for_status()
            return resp.json()

    def control(self, spec: dict[str, Any] | None = None, **faults: Any) -> dict[str, Any]:
        """Arm faults: ``control(fail={"count": 2, "status": 503})`` or ``control({"reset": True})``."""
        return dict(self._call("POST", "/_control", {**(spec or {}), **faults}))

    def requests(self) -> list[dict[str, Any]]:
        """The /v1 requests received so far: ``{"method", "path", "headers", "body", "connection"}``; header
        names are lower-case and `connection` numbers the TCP connection (to check keep-alive reuse)."""
        return list(self._call("GET", "/_requests")["data"])

    def clear_requests(self) -> None:
        self._call("DELETE", "/_requests")

    def reset(self) -> None:
        """Forget armed faults, latency and received requests: call it at the start of each test."""
        self.control(reset=True)
        self.clear_requests()

    def stop(self) -> None:
        self._finalizer()

    def __enter__(self) -> StubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], tmpdir: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    for name in ("answers.jsonl", "stderr.log"):
        Path(tmpdir, name).unlink(missing_ok=True)
    os.rmdir(tmpdir)


def start_stub(port: int = 0, *, answers: str | os.PathLike[str] | dict[str, str] | None = None,
               model: str | None = None, latency_ms: float = 0.0, host: str = "127.0.0.1",
               startup_timeout: float = 15.0) -> StubProcess:
    """Start the stub as a subprocess (port 0: a free one) and return once it answers.

    `answers` is a JSONL path or an ``{input: output}`` dict (written to a temporary file for the process).
    """
    tmpdir = tempfile.mkdtemp(prefix="tiergate-stub-")
    cmd = [sys.executable, "-m", "tiergate.testing.stub_upstream", "--host", host, "--port", str(port),
           "--latency-ms", str(latency_ms)]
    if isinstance(answers, dict):
        path = Path(tmpdir, "answers.jsonl")
        path.write_bytes(b"".join(orjson.dumps({"input": k, "output": v}) + b"\n" for k, v in answers.items()))
        answers = path
    if answers is not None:
        cmd += ["--answers", str(answers)]
    if model is not None:
        cmd += ["--model", model]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(Path(tmpdir, "stderr.log"), "wb") as errlog:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, stdin=subprocess.DEVNULL, env=env)
    try:
        bound = _await_port(proc, startup_timeout)
    except RuntimeError as exc:
        _terminate_quietly(proc)
        detail = Path(tmpdir, "stderr.log").read_text(errors="replace")[-2000:]
        _terminate(proc, tmpdir)
        raise RuntimeError(f"{exc}\n{detail}") from None
    stub = StubProcess(proc, host, bound, tmpdir)
    stub._call("GET", "/_health")
    return stub


def _await_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("LISTENING "):
        raise RuntimeError(f"stub upstream did not start (exit code {proc.poll()}, said {line!r})")
    return int(line.split()[1])


def _terminate_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def stub_fixture(name: str = "stub", scope: str = "module", **options: Any) -> Any:
    """A pytest fixture yielding a running StubProcess: ``stub = stub_fixture(scope="module")`` in a test module."""
    import pytest

    def _fixture() -> Iterator[StubProcess]:
        with start_stub(**options) as stub:
            yield stub

    return pytest.fixture(scope=scope, name=name)(_fixture)  # type: ignore[call-overload]
