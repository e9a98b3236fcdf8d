"""The gateway end to end: the real `openai` client against uvicorn on loopback, upstream tiers that are a
separate stub HTTP process told to fail, stall or rate-limit."""

from __future__ import annotations

import collections
import time

import httpx
import openai
import pytest

from tiergate.store.records import query_records
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub


@pytest.fixture(scope="module")
def stubs():
    with start_stub(model="frontier-model") as a, start_stub(model="backup-model") as b:
        yield a, b


def _config(tmp_path, a, b, **over):
    fast_retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    cfg = {
        "auth": {"require_key": True, "key_cache_s": 0, "admin_token": "admin-secret"},
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", "flush_interval_ms": 1},
        "server": {"max_body_bytes": 4096},
        "tiers": {
            "frontier": {"kind": "upstream", "base_url": a.base_url, "api_key": "sk-upstream-SECRET",
                         "model": "gpt-4o-mini", "zone": "external", "fallback": "backup",
                         "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
                         "timeout": {"connect": 1, "read": 0.5}, "retry": fast_retry,
                         "breaker": {"failure_threshold": 2, "reset_after_s": 60}},
            "backup": {"kind": "upstream", "base_url": b.base_url, "zone": "external",
                       "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
                       "timeout": {"connect": 1, "read": 0.5}, "retry": fast_retry},
            "solo": {"kind": "upstream", "base_url": a.base_url, "zone": "external",
                     "price": {"per_request_usd": 0.5},
                     "timeout": {"connect": 1, "read": 0.3}, "retry": fast_retry},
        },
        "models": {"auto": "auto", "gpt-4o-mini": "auto"},
        "routing": {"default_tier": "frontier"},
        "workloads": {
            "triage": {"policy": [{"kind": "split", "weights": {"frontier": 0.5, "backup": 0.5}}]},
            "pinned": {"tier": "backup"},
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
def gw(tmp_path, stubs):
    a, b = stubs
    a.reset()
    b.reset()
    with run_gateway(_config(tmp_path, a, b)) as running:
        yield running


def _records(gw):
    gw.gateway.writer  # noqa: B018
    import asyncio

    fut = asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), _loop(gw))
    fut.result(10)
    return query_records(gw.gateway.engine, limit=None, newest_first=False)


def _loop(gw):
    return gw.gateway.writer._task.get_loop()


def test_non_streaming_roundtrip_headers_and_capture(gw, stubs):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"X-Tiergate-Workload": "default"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "stub answer: hello there"
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert raw.headers["x-tiergate-route-reason"] == "default"
    # usage from the stub: 2 prompt words, 4 answer words, priced at 2.5 / 10 per million
    assert float(raw.headers["x-tiergate-cost-usd"]) == pytest.approx((2 * 2.5 + 4 * 10.0) / 1e6)
    rec = _records(gw)[-1]
    assert rec["status"] == "ok" and rec["tier"] == "frontier" and rec["route_reason"] == "default"
    assert rec["messages"] == [{"role": "user", "content": "hello there"}]
    assert rec["answer"] == "stub answer: hello there"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (2, 4)
    assert rec["api_key_id"] and rec["latency_ms"] > 0
    # the upstream key went upstream, and nowhere else
    sent = stubs[0].requests()[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-SECRET"
    assert "SECRET" not in str(rec)


def test_streaming_with_usage(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "count one two three"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "stub answer: count one two three"
    assert usage is not None and usage.prompt_tokens == 4
    rec = _records(gw)[-1]
    assert rec["stream"] and rec["status"] == "ok" and rec["answer"] == text
    assert rec["prompt_tokens"] == 4 and rec["cost_usd"] > 0


def test_unknown_fields_pass_through_unchanged(gw, stubs):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
                                                                                    "properties": {}}}}]
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=tools, tool_choice="auto",
        response_format={"type": "json_object"}, logprobs=True, top_logprobs=2, seed=7, n=1, user="u-1",
        temperature=0.3, extra_body={"vendor_field": {"x": [1, 2]}},
    )
    body = stubs[0].requests()[-1]["body"]
    assert body["tools"] == tools and body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["seed"] == 7
    assert body["user"] == "u-1" and body["vendor_field"] == {"x": [1, 2]} and body["temperature"] == 0.3
    assert body["model"] == "gpt-4o-mini"


def test_workload_from_header_and_metadata_and_static_route(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    r1 = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "a"}], extra_headers={"X-Tiergate-Workload": "pinned"})
    r2 = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "b"}], metadata={"workload": "pinned"})
    for r in (r1, r2):
        assert r.headers["x-tiergate-tier"] == "backup" and r.headers["x-tiergate-route-reason"] == "static"
    assert [r["workload"] for r in _records(gw)[-2:]] == ["pinned", "pinned"]


def test_model_name_pins_a_tier(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.with_raw_response.create(model="backup", messages=[{"role": "user", "content": "x"}])
    assert r.headers["x-tiergate-tier"] == "backup" and r.headers["x-tiergate-route-reason"] == "model"


def test_split_is_weighted_and_sticky(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    seen = collections.Counter()
    for i in range(40):
        tiers = set()
        for _ in range(2):
            r = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "x"}], user=f"caller-{i}",
                extra_headers={"X-Tiergate-Workload": "triage"})
            assert r.headers["x-tiergate-route-reason"] == "split"
            tiers.add(r.headers["x-tiergate-tier"])
        assert len(tiers) == 1, "the same caller must stay on one side of the split"
        seen[tiers.pop()] += 1
    assert seen["frontier"] >= 8 and seen["backup"] >= 8


def test_retry_then_success(gw, stubs):
    stubs[0].control(fail={"count": 1, "status": 503})
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert r.headers["x-tiergate-tier"] == "frontier"
    assert len(stubs[0].requests()) == 2


def test_fallback_then_circuit_breaker(gw, stubs):
    a, b = stubs
    a.control(fail={"count": 100, "status": 500})
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    for _ in range(2):  # two failing requests (2 attempts each) open frontier's circuit (threshold 2)
        r = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "x"}])
        assert r.headers["x-tiergate-tier"] == "backup" and r.headers["x-tiergate-route-reason"] == "fallback"
    hits = len(a.requests())
    assert hits == 4
    r = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert r.headers["x-tiergate-tier"] == "backup"
    assert len(a.requests()) == hits, "an open circuit must not call the failing tier"
    rec = _records(gw)[-1]
    assert rec["response"]["fallback_from"] == ["frontier"] and rec["response"]["decided"]["tier"] == "frontier"
    health = httpx.get(gw.url + "/healthz").json()
    assert health["tiers"]["frontier"]["circuit"] == "open"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_fallbacks_total{from_tier="frontier",to_tier="backup"} 3.0' in metrics


def _post(gw, body, key=None, **kw):
    headers = {"Authorization": f"Bearer {key or gw.key}", "Content-Type": "application/json"}
    headers.update(kw.pop("headers", {}))
    return httpx.post(gw.base_url + "/chat/completions", content=body, headers=headers, timeout=10, **kw)


def _assert_openai_error(resp, status, type_=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if type_:
        assert err["type"] == type_
    return err


def test_error_statuses(gw, stubs):
    msg = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
    _assert_openai_error(_post(gw, b"{not json"), 400, "invalid_request_error")
    _assert_openai_error(_post(gw, b"[1, 2]"), 400)
    assert _assert_openai_error(_post(gw, b'{"model": "auto"}'), 400)["param"] == "messages"
    assert _assert_openai_error(_post(gw, b'{"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}'),
                                400)["param"] == "messages[0].role"
    assert _assert_openai_error(_post(gw, b'{"model": "auto", "temperature": 9, "messages": [{"role": "user", '
                                          b'"content": "x"}]}'), 400)["param"] == "temperature"
    err = _assert_openai_error(_post(gw, b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}'), 404)
    assert err["code"] == "model_not_found"
    _assert_openai_error(_post(gw, msg, key="tg-wrong"), 401, "authentication_error")
    _assert_openai_error(httpx.post(gw.base_url + "/chat/completions", content=msg), 401)
    _assert_openai_error(_post(gw, b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * 5000
                               + b'"}]}'), 413)
    # upstream failure with no fallback: 502; a stall past the read timeout: 504
    stubs[0].control(fail={"count": 10, "status": 503})
    _assert_openai_error(_post(gw, b'{"model": "solo", "messages": [{"role": "user", "content": "x"}]}'), 502)
    stubs[0].control(reset=True)
    stubs[0].control(stall={"count": 10, "seconds": 2})
    _assert_openai_error(_post(gw, b'{"model": "solo", "messages": [{"role": "user", "content": "x"}]}'), 504)
    stubs[0].control(reset=True)
    _assert_openai_error(httpx.get(gw.url + "/v1/nothing"), 404)
    _assert_openai_error(httpx.get(gw.base_url + "/chat/completions"), 405)
    # every authenticated request was captured, errors included, with its status
    statuses = [r["http_status"] for r in _records(gw)]
    assert statuses.count(400) == 5 and statuses.count(404) == 1 and statuses.count(413) == 0
    assert 502 in statuses and 504 in statuses


def test_upstream_4xx_passes_through(gw, stubs):
    stubs[0].control(fail={"count": 1, "status": 400})
    r = _post(gw, b'{"model": "solo", "messages": [{"role": "user", "content": "x"}]}')
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_revoked_key_is_refused(gw):
    import asyncio

    from tiergate.store.keys import create_key, revoke_key

    _, secret = create_key(gw.gateway.engine, "temp")
    msg = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
    assert _post(gw, msg, key=secret).status_code == 200
    revoke_key(gw.gateway.engine, "temp")
    _assert_openai_error(_post(gw, msg, key=secret), 401)
    del asyncio


def test_models_health_metrics_admin(gw):
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"auto", "gpt-4o-mini", "frontier", "backup", "solo"} <= ids
    assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(gw.url + "/metrics").text
    for name in ("tiergate_requests_total", "tiergate_request_latency_seconds_bucket", "tiergate_tokens_total",
                 "tiergate_cost_usd_total", "tiergate_writer_queue_depth", "tiergate_route_decision_seconds"):
        assert name in text
    _assert_openai_error(httpx.get(gw.url + "/admin/keys"), 401)
    r = httpx.post(gw.url + "/admin/keys", json={"name": "bob"}, headers={"Authorization": "Bearer admin-secret"})
    assert r.status_code == 201 and r.json()["key"].startswith("tg-")
    listed = httpx.get(gw.url + "/admin/keys", headers={"Authorization": "Bearer admin-secret"}).json()["data"]
    assert "bob" in {k["name"] for k in listed} and all("key_hash" not in k for k in listed)


def test_rate_limited_upstream_retries_after(gw, stubs):
    stubs[0].control(rate_limit={"count": 1, "retry_after": 0.3})
    t = time.perf_counter()
    r = _post(gw, b'{"model": "solo", "messages": [{"role": "user", "content": "x"}]}')
    assert r.status_code == 200
    assert time.perf_counter() - t >= 0.05  # waited (Retry-After capped at backoff_max_s=0.05)


def test_stream_without_include_usage_is_still_priced_exactly(gw, stubs):
    """The gateway asks the upstream for usage itself; the caller, who did not ask, never sees that chunk."""
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stub answer: one two three"
    assert stubs[0].requests()[-1]["body"]["stream_options"] == {"include_usage": True}
    rec = _records(gw)[-1]
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (3, 5)
    assert "usage_estimated" not in rec["response"]
    assert rec["cost_usd"] == pytest.approx((3 * 2.5 + 5 * 10.0) / 1e6)
