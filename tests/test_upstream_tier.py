"""The upstream tier against the real stub upstream process: pass-through, retries, timeouts, streaming."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from tiergate.config import UpstreamTierConfig
from tiergate.errors import UpstreamError, UpstreamHTTPError, UpstreamTimeout
from tiergate.testing import StubProcess, stub_fixture
from tiergate.tiers.base import StreamChunk
from tiergate.tiers.registry import build_tier
from tiergate.tiers.upstream import UpstreamTier

T = TypeVar("T")
KEY = "sk-test-very-secret-0123456789"

stub = stub_fixture(scope="module", answers={"What is 2+2?": "4"})


@pytest.fixture(autouse=True)
def _fresh_stub(stub: StubProcess) -> None:
    stub.reset()


def make_tier(base_url: str, **overrides: Any) -> UpstreamTier:
    data: dict[str, Any] = {
        "kind": "upstream", "base_url": base_url, "api_key": KEY,
        "retry": {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 2.0},
        "timeout": {"connect": 1.0, "read": 2.0},
    }
    data.update(overrides)
    tier = build_tier("frontier", UpstreamTierConfig.model_validate(data))
    assert isinstance(tier, UpstreamTier)
    return tier


def run(tier: UpstreamTier, use: Callable[[UpstreamTier], Awaitable[T]]) -> T:
    async def go() -> T:
        await tier.start()
        try:
            return await use(tier)
        finally:
            await tier.close()

    return asyncio.run(go())


async def collect(tier: UpstreamTier, body: dict[str, Any], into: list[StreamChunk] | None = None) -> list[StreamChunk]:
    chunks: list[StreamChunk] = [] if into is None else into
    async for chunk in tier.stream(body):
        chunks.append(chunk)
    return chunks


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **fields}


def test_body_passes_through_unchanged_with_auth_and_extra_headers(stub: StubProcess) -> None:
    body = ask(
        "classify: my invoice is wrong",
        tools=[{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "route"}},
        response_format={"type": "json_object"}, logprobs=True, top_logprobs=2, seed=7, n=2,
        user="u-42", metadata={"workload": "triage"}, temperature=0, x_vendor_extension={"a": [1, 2.5, None]},
    )
    sent = {**body}
    tier = make_tier(stub.base_url, headers={"OpenAI-Organization": "org-1"})
    result = run(tier, lambda t: t.complete(body))

    assert body == sent                      # the caller's dict is not touched
    (received,) = stub.requests()
    assert received["path"] == "/v1/chat/completions"
    assert received["body"] == body
    assert received["headers"]["authorization"] == f"Bearer {KEY}"
    assert received["headers"]["openai-organization"] == "org-1"
    assert received["headers"]["content-type"] == "application/json"
    assert result.content == "stub answer: classify: my invoice is wrong"
    assert len(result.data["choices"]) == 2
    assert (result.prompt_tokens, result.completion_tokens) == (5, 7)
    assert result.raw is not None and result.body_bytes() == result.raw and b'"chat.completion"' in result.raw
    assert tier.model_names() == []


def test_model_is_replaced_when_the_tier_names_one(stub: StubProcess) -> None:
    tier = make_tier(stub.base_url, model="frontier-large")
    body = ask("What is 2+2?", seed=1, stream=False)
    result = run(tier, lambda t: t.complete(body))
    (received,) = stub.requests()
    assert received["body"] == {**body, "model": "frontier-large"}
    assert body["model"] == "gpt-4o-mini"
    assert result.content == "4" and result.data["model"] == "frontier-large"
    assert tier.model_names() == ["frontier-large"]


def test_complete_drops_stream_fields_the_caller_left_in(stub: StubProcess) -> None:
    body = ask("hi", stream=True, stream_options={"include_usage": True}, seed=3)
    result = run(make_tier(stub.base_url), lambda t: t.complete(body))
    assert result.content == "stub answer: hi"
    assert stub.requests()[0]["body"] == ask("hi", seed=3)


def test_retries_503_then_succeeds(stub: StubProcess) -> None:
    stub.control(fail={"count": 2, "status": 503})
    result = run(make_tier(stub.base_url), lambda t: t.complete(ask("again")))
    assert result.content == "stub answer: again"
    assert len(stub.requests()) == 3


def test_dropped_connection_is_retried(stub: StubProcess) -> None:
    stub.control(drop={"count": 1})
    result = run(make_tier(stub.base_url), lambda t: t.complete(ask("again")))
    assert result.content == "stub answer: again"
    assert len(stub.requests()) == 2


def test_429_waits_for_retry_after(stub: StubProcess) -> None:
    stub.control(rate_limit={"count": 1, "retry_after": 1})
    started = time.monotonic()
    result = run(make_tier(stub.base_url), lambda t: t.complete(ask("patience")))
    waited = time.monotonic() - started
    assert result.content == "stub answer: patience"
    assert 0.95 <= waited < 2.5, waited


def test_429_after_retries_keeps_its_status_and_body(stub: StubProcess) -> None:
    stub.control(rate_limit={"count": 5, "retry_after": 0})
    with pytest.raises(UpstreamHTTPError) as info:
        run(make_tier(stub.base_url, retry={"max_attempts": 2, "backoff_base_s": 0.01}),
            lambda t: t.complete(ask("x")))
    assert info.value.status == 429
    assert b"rate_limit_exceeded" in info.value.body
    assert info.value.headers["retry-after"] == "0"
    assert len(stub.requests()) == 2


def test_5xx_after_retries_is_a_502_naming_tier_and_status(stub: StubProcess) -> None:
    stub.control(fail={"count": 10, "status": 503})
    with pytest.raises(UpstreamError) as info:
        run(make_tier(stub.base_url), lambda t: t.complete(ask("x")))
    err = info.value
    assert type(err) is UpstreamError and err.status == 502
    assert "frontier" in err.message and "503" in err.message and "3 attempts" in err.message
    assert KEY not in str(err) and KEY not in repr(err)
    assert len(stub.requests()) == 3


def test_400_is_passed_through_unchanged_without_retry(stub: StubProcess) -> None:
    bad = {"model": "gpt-4o-mini", "messages": "not a list"}
    direct = httpx.post(stub.base_url + "/chat/completions", json=bad)
    stub.clear_requests()
    with pytest.raises(UpstreamHTTPError) as info:
        run(make_tier(stub.base_url), lambda t: t.complete(bad))
    assert info.value.status == 400 == direct.status_code
    assert info.value.body == direct.content
    assert info.value.headers["content-type"] == "application/json"
    assert len(stub.requests()) == 1


def test_stall_beyond_read_timeout_is_an_upstream_timeout(stub: StubProcess) -> None:
    stub.control(stall={"count": 5, "seconds": 3})
    tier = make_tier(stub.base_url, timeout={"read": 0.2}, retry={"max_attempts": 2, "backoff_base_s": 0.01})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        run(tier, lambda t: t.complete(ask("slow")))
    assert time.monotonic() - started < 1.5
    assert info.value.status == 504 and "frontier" in info.value.message


def test_one_stall_is_retried_away(stub: StubProcess) -> None:
    stub.control(stall={"count": 1, "seconds": 3})
    tier = make_tier(stub.base_url, timeout={"read": 0.2})
    assert run(tier, lambda t: t.complete(ask("slow"))).content == "stub answer: slow"


def test_total_timeout_bounds_the_whole_call(stub: StubProcess) -> None:
    stub.control(stall={"count": 5, "seconds": 3})
    tier = make_tier(stub.base_url, timeout={"read": 2.0, "total": 0.3})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        run(tier, lambda t: t.complete(ask("slow")))
    assert time.monotonic() - started < 1.0


def test_connection_refused_is_an_upstream_error() -> None:
    with socket.socket() as sock:                    # a port that was free a moment ago and now is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tier = make_tier(f"http://127.0.0.1:{port}/v1", retry={"max_attempts": 2, "backoff_base_s": 0.01})
    with pytest.raises(UpstreamError) as info:
        run(tier, lambda t: t.complete(ask("anyone?")))
    err = info.value
    assert type(err) is UpstreamError and err.status == 502
    assert "frontier" in err.message and "could not be reached" in err.message
    assert KEY not in str(err) and KEY not in repr(tier) and KEY not in repr(tier.config)
    # the caller is not told where the upstream lives; the record (and the log) is
    assert str(port) not in err.message and "127.0.0.1" not in err.message
    assert err.detail is not None and f"127.0.0.1:{port}" in err.detail and f"127.0.0.1:{port}" in err.recorded


def test_stream_with_include_usage(stub: StubProcess) -> None:
    body = ask("stream this please", stream=True, stream_options={"include_usage": True}, seed=5)
    tier = make_tier(stub.base_url, model="frontier-large")
    chunks = run(tier, lambda t: collect(t, body))
    assert chunks[-1].data is None and chunks[-1].raw == b"data: [DONE]\n\n"
    assert all(c.raw.startswith(b"data: ") and c.raw.endswith(b"\n\n") for c in chunks)
    events = [c.data for c in chunks[:-1] if c.data is not None]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "stub answer: stream this please"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert {e["model"] for e in events} == {"frontier-large"}
    assert stub.requests()[0]["body"] == {**body, "model": "frontier-large"}


def test_stream_retries_before_its_first_chunk(stub: StubProcess) -> None:
    stub.control(fail={"count": 1, "status": 502})
    chunks = run(make_tier(stub.base_url), lambda t: collect(t, ask("retry me")))
    assert chunks[-1].data is None and len(stub.requests()) == 2
    assert stub.requests()[0]["body"]["stream"] is True


def test_stream_that_cannot_start_raises_before_any_chunk(stub: StubProcess) -> None:
    stub.control(fail={"count": 5, "status": 500})
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamError):
        run(make_tier(stub.base_url, retry={"max_attempts": 2, "backoff_base_s": 0.01}),
            lambda t: collect(t, ask("x"), got))
    assert got == []


def test_stream_dropped_midway_is_an_upstream_error(stub: StubProcess) -> None:
    stub.control(stream_fail_after={"count": 1, "chunks": 2})
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamError) as info:
        run(make_tier(stub.base_url), lambda t: collect(t, ask("one two three four"), got))
    assert type(info.value) is UpstreamError
    assert len(got) == 2 and "after 2 events" in info.value.message
    assert len(stub.requests()) == 1           # no retry once chunks were handed out


def test_stream_stalled_midway_is_an_upstream_timeout(stub: StubProcess) -> None:
    stub.control(stall={"count": 1, "seconds": 3, "after_chunks": 2})
    got: list[StreamChunk] = []
    with pytest.raises(UpstreamTimeout):
        run(make_tier(stub.base_url, timeout={"read": 0.2}), lambda t: collect(t, ask("one two three"), got))
    assert len(got) == 2


def test_stub_answers_models_and_keeps_connections_alive(stub: StubProcess) -> None:
    with httpx.Client() as client:
        models = client.get(stub.base_url + "/models").json()
        for _ in range(3):
            resp = client.post(stub.base_url + "/chat/completions", json=ask("What is 2+2?"))
            assert resp.json()["choices"][0]["message"]["content"] == "4"
        assert client.get(stub.url + "/nope").status_code == 404
    assert models["data"][0]["id"] == "stub-model"
    assert [r["path"] for r in stub.requests()] == ["/v1/models"] + ["/v1/chat/completions"] * 3


def test_streams_and_answers_share_one_keep_alive_connection(stub: StubProcess) -> None:
    async def mixed(tier: UpstreamTier) -> None:
        for _ in range(3):
            await collect(tier, ask("a b c"))
            await tier.complete(ask("d e"))

    run(make_tier(stub.base_url), mixed)
    received = stub.requests()
    assert len(received) == 6
    assert len({r["connection"] for r in received}) == 1
