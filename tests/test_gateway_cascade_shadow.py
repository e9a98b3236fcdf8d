"""The gateway's cascade and shadow paths, driven by test routers registered through the public registry."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions
from tiergate.routing.registry import _KINDS, register_router
from tiergate.store.records import query_records
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub


class ShadowRouter(Router):
    kind = "test_shadow"

    class Options(RouterOptions):
        tier: str
        shadow_tier: str

    def decide(self, req: RouteRequest) -> RouteDecision:
        return RouteDecision(self.options.tier, "test_shadow", shadow=self.options.shadow_tier)  # type: ignore[attr-defined]


class ContentCascade(Router):
    """Keeps the small tier's answer unless it says 'escalate'."""

    kind = "test_cascade"

    class Options(RouterOptions):
        small: str
        large: str

    def decide(self, req: RouteRequest) -> RouteDecision:
        return RouteDecision(self.options.small, "cascade", reviewer=self)  # type: ignore[attr-defined]

    async def review(self, req: RouteRequest, result) -> RouteDecision | None:  # type: ignore[no-untyped-def]
        if "escalate" in (result.content or ""):
            return RouteDecision(self.options.large, "cascade:escalated", score=0.1,  # type: ignore[attr-defined]
                                 detail={"why": "asked to"})
        return None


@pytest.fixture(scope="module")
def routers():
    register_router("test_shadow", ShadowRouter)
    register_router("test_cascade", ContentCascade)
    try:
        yield
    finally:
        _KINDS.pop("test_shadow", None)
        _KINDS.pop("test_cascade", None)


@pytest.fixture
def env(tmp_path, routers):
    answers = {"hard question": "I must escalate this"}
    with start_stub(model="small", answers=answers) as small, start_stub(model="large", latency_ms=300) as large:
        cfg = {
            "auth": {"require_key": False},
            "store": {"url": f"sqlite:///{tmp_path / 'c.db'}", "flush_interval_ms": 1},
            "tiers": {
                "small": {"kind": "upstream", "base_url": small.base_url, "zone": "on_prem",
                          "price": {"per_request_usd": 0.001}},
                "large": {"kind": "upstream", "base_url": large.base_url,
                          "price": {"input_per_mtok": 1000, "output_per_mtok": 1000}},
            },
            "workloads": {
                "shadowed": {"policy": [{"kind": "test_shadow", "tier": "small", "shadow_tier": "large"}]},
                "cascaded": {"policy": [{"kind": "test_cascade", "small": "small", "large": "large"}]},
            },
        }
        with run_gateway(cfg) as gw:
            yield gw, small, large


def _flush(gw):
    gw_obj = gw.gateway
    loop = gw_obj.writer._task.get_loop()

    async def settle():
        while gw_obj._background:
            await asyncio.sleep(0.01)
        await gw_obj.writer.flush()

    asyncio.run_coroutine_threadsafe(settle(), loop).result(30)
    return query_records(gw_obj.engine, limit=None, newest_first=False)


def test_cascade_keeps_or_escalates_with_both_answers(env):
    gw, small, large = env
    client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
    kept = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "easy one"}], metadata={"workload": "cascaded"})
    assert kept.headers["x-tiergate-tier"] == "small"
    assert kept.headers["x-tiergate-route-reason"] == "cascade:kept"
    esc = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hard question"}], metadata={"workload": "cascaded"})
    assert esc.headers["x-tiergate-tier"] == "large"
    assert esc.headers["x-tiergate-route-reason"] == "cascade:escalated"
    assert esc.parse().choices[0].message.content == "stub answer: hard question"
    # streamed through a cascade: the kept answer arrives as a stream
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "easy two"}], metadata={"workload": "cascaded"},
        stream=True) if c.choices)
    assert text == "stub answer: easy two"
    recs = _flush(gw)
    final = [r for r in recs if r["role"] == "primary" and r["route_reason"] == "cascade:escalated"][0]
    first = [r for r in recs if r["role"] == "cascade_first"][0]
    assert first["parent_request_id"] == final["request_id"] and first["tier"] == "small"
    assert first["answer"] == "I must escalate this" and first["cost_usd"] == pytest.approx(0.001)
    assert final["response"]["cascade"]["first_answer"] == "I must escalate this"
    assert final["answer"] == "stub answer: hard question"
    assert [r["route_reason"] for r in recs if r["role"] == "primary"] == \
        ["cascade:kept", "cascade:escalated", "cascade:kept"]


def test_a_failed_escalation_is_the_large_tiers_and_keeps_the_small_answer(env):
    gw, small, large = env
    large.control(fail={"count": 10, "status": 503})
    client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hard question"}],
                                       metadata={"workload": "cascaded"})
    assert exc.value.response.headers["x-tiergate-tier"] == "large"
    assert exc.value.response.headers["x-tiergate-route-reason"] == "cascade:escalated"
    final = [r for r in _flush(gw) if r["role"] == "primary"][-1]
    assert (final["tier"], final["route_reason"], final["status"]) == ("large", "cascade:escalated", "error")
    assert final["response"]["cascade"]["first_answer"] == "I must escalate this"
    assert final["response"]["cascade"]["why"] == "asked to"


def test_shadow_adds_no_latency_and_never_changes_the_answer(env):
    gw, small, large = env
    client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
    t = time.perf_counter()
    for i in range(5):
        r = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"q{i}"}], metadata={"workload": "shadowed"})
        assert r.headers["x-tiergate-tier"] == "small"
        assert r.parse().choices[0].message.content == f"stub answer: q{i}"
    elapsed = time.perf_counter() - t
    assert elapsed < 5 * 0.3, f"the 300 ms shadow tier must not delay callers (took {elapsed:.2f}s for 5)"
    recs = _flush(gw)
    shadows = [r for r in recs if r["role"] == "shadow"]
    primaries = {r["request_id"]: r for r in recs if r["role"] == "primary"}
    assert len(shadows) == 5 and all(s["parent_request_id"] in primaries for s in shadows)
    assert all(s["tier"] == "large" and s["status"] == "ok" and s["cost_usd"] > 0 for s in shadows)
    assert len(large.requests()) == 5
