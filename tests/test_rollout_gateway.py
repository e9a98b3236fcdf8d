"""Rollouts through a real gateway (uvicorn, real stub upstream processes, SQLite): stages advance on good
traffic, roll back on bad traffic within a bounded number of requests, survive a restart, never touch the
caller's answer, add no caller latency, and stay sticky per caller key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from tiergate.rollout.manager import RolloutManager, attach
from tiergate.rollout.state import RolloutStore
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub

GOOD = {f"good {i}": ("billing" if i % 3 else "technical") for i in range(400)}
BAD = {f"bad {i}": "billing" for i in range(100)}
GATES = {"min_compared": 30, "agreement": 0.9, "confidence": 0.95, "rollback_min_compared": 10,
         "max_error_rate": 0.05, "max_hallucination_rate": 0.05}


def on_loop(gw: Any, coro: Any, timeout: float = 30) -> Any:
    loop = gw.gateway.writer._task.get_loop()
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def settle(gw: Any) -> None:
    """Wait for shadow calls, transitions and the capture writer."""
    g = gw.gateway

    async def run() -> None:
        for _ in range(3):
            while g._background:
                await asyncio.sleep(0.005)
            await g.writer.flush()

    on_loop(gw, run())


@contextmanager
def rollout_gateway(cfg: dict[str, Any]) -> Iterator[tuple[Any, RolloutManager]]:
    with run_gateway(cfg) as gw:
        manager = attach(gw.app)  # a no-op once create_app attaches it
        on_loop(gw, manager.start())
        yield gw, manager


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[Any, Any]]:
    small_answers = {**GOOD, **{k: "technical" for k in BAD}}
    with start_stub(model="frontier", answers={**GOOD, **BAD}) as frontier, \
            start_stub(model="small", answers=small_answers) as small:
        yield frontier, small


def config(url: str, frontier: Any, small: Any, **rollout: Any) -> dict[str, Any]:
    policy = {"kind": "rollout", "primary": "frontier", "candidate": "small", "canary": [10, 50],
              "shadow_fraction": 1.0, "verify_fraction": 1.0, "gates": GATES, "seed": 1, **rollout}
    return {
        "auth": {"require_key": False},
        "store": {"url": url, "flush_interval_ms": 1},
        "tiers": {
            "frontier": {"kind": "upstream", "base_url": frontier.base_url,
                         "price": {"input_per_mtok": 150, "output_per_mtok": 600}},
            "small": {"kind": "upstream", "base_url": small.base_url, "zone": "on_prem",
                      "price": {"per_request_usd": 0.00001}},
        },
        "workloads": {"triage": {"task": "classification", "policy": [policy]}},
    }


def ask(client: openai.OpenAI, text: str, key: str | None = None) -> Any:
    extra = {"X-Tiergate-Workload": "triage"}
    if key:
        extra["X-Tiergate-Sticky-Key"] = key
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], extra_headers=extra)


def stage(manager: RolloutManager) -> str:
    return manager.runtimes["triage"].router.state.stage


def test_advances_through_every_stage_then_rolls_back_on_bad_traffic(tmp_path: Any, stubs: Any) -> None:
    frontier, small = stubs
    cfg = config(f"sqlite:///{tmp_path / 'r.db'}", frontier, small)
    with rollout_gateway(cfg) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        seen, reasons = [stage(manager)], set()
        texts = list(GOOD)
        for i, text in enumerate(texts):
            r = ask(client, text)
            assert r.parse().choices[0].message.content == GOOD[text]  # good traffic: both tiers agree
            reasons.add(r.headers["x-tiergate-route-reason"])
            settle(gw)
            if stage(manager) != seen[-1]:
                seen.append(stage(manager))
            if stage(manager) == "full":
                break
        print(f"reached full after {i + 1} requests")
        assert seen == ["shadow", "canary-10", "canary-50", "full"], seen
        assert {"rollout:shadow", "rollout:canary", "rollout:primary"} <= reasons
        assert i + 1 <= 4 * 30 + 20, f"took {i + 1} requests to reach full"
        assert ask(client, "good 399").headers["x-tiergate-tier"] == "small"

        # bad traffic: the candidate now answers wrongly; the verify shadows catch it
        for n, text in enumerate(BAD, start=1):
            ask(client, text)
            settle(gw)
            if stage(manager) == "rolled_back":
                break
        assert stage(manager) == "rolled_back"
        print(f"rolled back after {n} bad requests")
        assert n <= 15, f"rolled back only after {n} bad requests"
        r = ask(client, "bad 99")
        assert r.headers["x-tiergate-tier"] == "frontier"
        assert r.headers["x-tiergate-route-reason"] == "rollout:rolled_back"

    store = RolloutStore(RolloutStore_engine(cfg))
    events = store.history("triage")
    assert [(e["from_stage"], e["to_stage"]) for e in events] == [
        (None, "shadow"), ("shadow", "canary-10"), ("canary-10", "canary-50"), ("canary-50", "full"),
        ("full", "rolled_back")]
    assert all(e["actor"] == "gates" for e in events[1:])
    assert "upper bound" in events[-1]["reason"] and events[-1]["stats"]["compared"] >= 10
    assert events[1]["stats"]["agreement_lower"] >= 0.9


def RolloutStore_engine(cfg: dict[str, Any]) -> Any:
    from tiergate.store.db import create_store_engine

    return create_store_engine(cfg["store"]["url"])
