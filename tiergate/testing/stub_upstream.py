"""A fast OpenAI-compatible stub upstream, run as a real process in tests and benchmarks.

    python -m tiergate.testing.stub_upstream --port 0 [--answers FILE.jsonl] [--model NAME] [--latency-ms 0]

It stands in for a frontier API: `POST /v1/chat/completions` (JSON or SSE with `stream_options.include_usage`)
and `GET /v1/models`. Answers are deterministic: the `--answers` JSONL line whose `input` equals the last user
message, else ``"stub answer: " + message[:200]``; usage counts whitespace-separated words. It records every
`/v1` request and the number of its TCP connection (`GET /_requests`; `DELETE /_requests` clears them) and
misbehaves when told to (`POST /_control`):

    {"fail": {"count": 2, "status": 503}}                  error answers (optional "message")
    {"rate_limit": {"count": 1, "retry_after": 1}}          429 with Retry-After
    {"stall": {"count": 1, "seconds": 5}}                   sleep before answering ("after_chunks": N: mid-stream)
    {"stream_fail_after": {"count": 1, "chunks": 2}}        drop the connection after N SSE events
    {"drop": {"count": 1}}                                  close the connection without answering
    {"latency_ms": 20}  {"reset": true}                     delay every answer; forget faults and latency

The server is a raw asyncio protocol on httptools (uvloop when installed) rather than an ASGI app, because it is
the upstream of the gateway-overhead benchmark and must not be the bottleneck. `tiergate.testing.start_stub()`
runs it as a subprocess on a free port and gives tests a small synchronous client.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson

from tiergate.tiers.base import make_chunk, make_completion

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 429: "rate_limit_error"}
_FAULTS = ("fail", "rate_limit", "stall", "stream_stall", "stream_fail_after", "drop")


def _error(status: int, message: str, code: str | None = None) -> bytes:
    etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})


def _words(text: str) -> int:
    return len(text.split())


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


@dataclass
class _Request:
    method: bytes
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    connection: int


@dataclass
class StubState:
    """Everything one stub process knows: canned answers, armed faults, received requests."""

    answers: dict[str, str] = field(default_factory=dict)
    model: str = "stub-model"
    latency_s: float = 0.0
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: deque[_Request] = field(default_factory=lambda: deque(maxlen=100_000))
    served: int = 0
    connections: int = 0

    def take(self, kind: str) -> dict[str, Any] | None:
        """Consume one use of an armed fault, if any."""
        fault = self.faults.get(kind)
        if fault is None:
            return None
        fault["count"] -= 1
        if fault["count"] <= 0:
            del self.faults[kind]
        return fault

    def control(self, spec: dict[str, Any]) -> None:
        if spec.get("reset"):
            self.faults.clear()
            self.latency_s = 0.0
        if "latency_ms" in spec:
            self.latency_s = float(spec["latency_ms"]) / 1000.0
        for kind in _FAULTS:
            if kind in spec:
                fault = dict(spec[kind])
                fault["count"] = int(fault.get("count", 1))
                if kind == "stall" and "after_chunks" in fault:
                    kind = "stream_stall"
                self.faults[kind] = fault


class _StubProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; pipelined requests are answered in order."""

    def __init__(self, state: StubState, parser_cls: Callable[[Any], Any]) -> None:
        self.state = state
        self.parser = parser_cls(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closed = False
        self.connection = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1
        self.connection = self.state.connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # httptools.HttpParserError and friends: answer 400 and hang up
            self._write(400, _error(400, "malformed HTTP request"), keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        req = _Request(self.parser.get_method(), path, self._headers, b"".join(self._body),
                       self.parser.should_keep_alive(), self.connection)
        if path.startswith("/v1/"):
            self.state.received.append(req)
        self.queue.append(req)
        if not self.busy:
            self._drain()

    # answering
    def _drain(self) -> None:
        while self.queue and not self.closed and not self.busy:
            req = self.queue.popleft()
            if req.path == "/v1/chat/completions":
                stall = self.state.take("stall")
                delay = (float(stall.get("seconds", 1.0)) if stall else 0.0) + self.state.latency_s
                if delay > 0:
                    self.busy = True
                    asyncio.get_running_loop().call_later(delay, self._resume, req)
                    return
            self._answer(req)

    def _resume(self, req: _Request) -> None:
        self.busy = False
        if not self.closed:
            self._answer(req)
            self._drain()

    def _answer(self, req: _Request) -> None:
        route = (req.method, req.path)
        if route == (b"POST", "/v1/chat/completions"):
            self._chat(req)
        elif route == (b"GET", "/v1/models"):
            models = {"object": "list", "data": [{"id": self.state.model, "object": "model", "created": 0,
                                                   "owned_by": "tiergate-stub"}]}
            self._write(200, orjson.dumps(models), req.keep_alive)
        elif route == (b"GET", "/_health"):
            self._write(200, b'{"status":"ok"}', req.keep_alive)
        elif route == (b"GET", "/_requests"):
            self._write(200, orjson.dumps({"object": "list", "data": [_describe(r) for r in self.state.received]}),
                        req.keep_alive)
        elif route == (b"DELETE", "/_requests"):
            self.state.received.clear()
            self._write(200, b'{"cleared":true}', req.keep_alive)
        elif route == (b"POST", "/_control"):
            try:
                self.state.control(orjson.loads(req.body))
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
                self._write(400, _error(400, f"bad control request: {exc}"), req.keep_alive)
                return
            body = {"faults": self.state.faults, "latency_ms": self.state.latency_s * 1000}
            self._write(200, orjson.dumps(body), req.keep_alive)
        else:
            self._write(404, _error(404, f"unknown route {req.method.decode()} {req.path}", "not_found"),
                        req.keep_alive)

    def _chat(self, req: _Request) -> None:
        state = self.state
        if state.take("drop"):
            self._hang_up()
            return
        fail = state.take("fail")
        if fail:
            status = int(fail.get("status", 500))
            self._write(status, _error(status, str(fail.get("message", f"stub failure {status}"))), req.keep_alive)
            return
        limited = state.take("rate_limit")
        if limited:
            after = str(limited.get("retry_after", 1)).encode()
            self._write(429, _error(429, "Rate limit reached (stub)", "rate_limit_exceeded"), req.keep_alive,
                        extra=b"retry-after: " + after + b"\r\n")
            return
        try:
            body = orjson.loads(req.body)
            messages = body["messages"]
            model = body["model"]
            if not isinstance(messages, list) or not isinstance(model, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._write(400, _error(400, "the body needs 'model' (string) and 'messages' (list)"), req.keep_alive)
            return
        last_user = next((_text(m.get("content")) for m in reversed(messages)
                          if isinstance(m, dict) and m.get("role") == "user"), "")
        answer = state.answers.get(last_user)
        if answer is None:
            answer = "stub answer: " + last_user[:200]
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages if isinstance(m, dict))
        state.served += 1
        cid = f"chatcmpl-stub{state.served}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(req, cid, model, answer, prompt_tokens, include_usage)
            return
        data = make_completion(model, answer, prompt_tokens=prompt_tokens, completion_tokens=_words(answer), cid=cid)
        n = body.get("n")
        if isinstance(n, int) and n > 1:
            first = data["choices"][0]
            data["choices"] = [{**first, "index": i} for i in range(n)]
        self._write(200, orjson.dumps(data), req.keep_alive)

    def _stream(self, req: _Request, cid: str, model: str, answer: str, prompt_tokens: int, usage: bool) -> None:
        created = int(time.time())
        words = answer.split(" ")
        chunks = [make_chunk(cid, model, created, delta={"role": "assistant", "content": ""})]
        chunks += [make_chunk(cid, model, created, delta={"content": w if i == 0 else " " + w})
                   for i, w in enumerate(words)]
        chunks.append(make_chunk(cid, model, created, delta={}, finish_reason="stop"))
        if usage:
            for c in chunks:
                c["usage"] = None
            completion_tokens = _words(answer)
            chunks.append(make_chunk(cid, model, created, usage={
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}))
        events = [_chunked(b"data: " + orjson.dumps(c) + b"\n\n") for c in chunks]
        events.append(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        head = _head(200, b"text/event-stream", None, req.keep_alive, b"cache-control: no-cache\r\n")
        cut = self.state.take("stream_fail_after")
        pause = self.state.take("stream_stall")
        if cut is not None:
            self._send(head + b"".join(events[: int(cut.get("chunks", 1))]))
            self._hang_up()
        elif pause is not None:
            split = int(pause.get("after_chunks", 1))
            self._send(head + b"".join(events[:split]))
            self.busy = True
            asyncio.get_running_loop().call_later(float(pause.get("seconds", 1.0)), self._finish_stream,
                                                  b"".join(events[split:]), req.keep_alive)
        else:
            self._send(head + b"".join(events))
            if not req.keep_alive:
                self._hang_up()

    def _finish_stream(self, rest: bytes, keep_alive: bool) -> None:
        self.busy = False
        if self.closed:
            return
        self._send(rest)
        if not keep_alive:
            self._hang_up()
        self._drain()

    def _write(self, status: int, body: bytes, keep_alive: bool, extra: bytes = b"") -> None:
        self._send(_head(status, b"application/json", len(body), keep_alive, extra) + body)
        if not keep_alive:
            self._hang_up()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        self.queue.clear()


def _head(status: int, ctype: bytes, length: int | None, keep_alive: bool, extra: bytes = b"") -> bytes:
    framing = b"content-length: %d\r\n" % length if length is not None else b"transfer-encoding: chunked\r\n"
    conn = b"" if keep_alive else b"connection: close\r\n"
    return _status_line(status) + b"content-type: " + ctype + b"\r\n" + framing + conn + extra + b"\r\n"


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    return b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _describe(req: _Request) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in req.headers:
        key = name.decode("latin-1")
        headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
    try:
        body: Any = orjson.loads(req.body) if req.body else None
    except orjson.JSONDecodeError:
        body = req.body.decode("utf-8", "replace")
    return {"method": req.method.decode(), "path": req.path, "headers": headers, "body": body,
            "connection": req.connection}


def load_answers(path: str | os.PathLike[str]) -> dict[str, str]:
    answers: dict[str, str] = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                row = orjson.loads(line)
                answers[str(row["input"])] = str(row["output"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}:{i}: expected {{\"input\": str, \"output\": str}} ({exc})") from exc
    return answers


async def serve(state: StubState, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled; prints ``LISTENING <port>`` once the socket accepts connections."""
    import httptools

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _StubProtocol(state, httptools.HttpRequestParser), host, port,
                                      backlog=4096, reuse_address=True)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tiergate.testing.stub_upstream", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as 'LISTENING <port>')")
    ap.add_argument("--answers", help="JSONL file of {\"input\": ..., \"output\": ...} lines")
    ap.add_argument("--model", default="stub-model", help="model id listed by GET /v1/models")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay every chat answer by this much")
    args = ap.parse_args(argv)
    state = StubState(answers=load_answers(args.answers) if args.answers else {}, model=args.model,
                      latency_s=args.latency_ms / 1000.0)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(state, args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
