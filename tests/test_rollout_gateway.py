"""Rollouts through a real gateway (uvicorn, real stub upstream processes, SQLite): stages advance on good
traffic, roll back on bad traffic within a bounded number of requests, survive a restart, never touch the
caller's answer, add no caller latency, and stay sticky per caller key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from tiergate.rollout.manager import RolloutManager, attach
from tiergate.rollout.state import RolloutStore
from tiergate.store.db import open_store
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
        requests = 0
        for text in GOOD:
            requests += 1
            r = ask(client, text)
            assert r.parse().choices[0].message.content == GOOD[text]  # good traffic: both tiers agree
            reasons.add(r.headers["x-tiergate-route-reason"])
            settle(gw)
            if stage(manager) != seen[-1]:
                seen.append(stage(manager))
            if stage(manager) == "full":
                break
        print(f"reached full after {requests} requests")
        assert seen == ["shadow", "canary-10", "canary-50", "full"], seen
        assert {"rollout:shadow", "rollout:canary", "rollout:primary"} <= reasons
        assert requests <= 3 * 30 + 20, f"took {requests} requests to reach full"
        assert ask(client, "good 399").headers["x-tiergate-tier"] == "small"

        # bad traffic: the candidate now answers wrongly; the verify shadows catch it
        n = 0
        for text in BAD:
            n += 1
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

    events = RolloutStore(open_store(cfg["store"]["url"])).history("triage")
    assert [(e["from_stage"], e["to_stage"]) for e in events] == [
        (None, "shadow"), ("shadow", "canary-10"), ("canary-10", "canary-50"), ("canary-50", "full"),
        ("full", "rolled_back")]
    assert all(e["actor"] == "gates" for e in events[1:])
    assert "upper bound" in events[-1]["reason"] and events[-1]["stats"]["compared"] >= 10
    assert events[1]["stats"]["agreement_lower"] >= 0.9


def test_state_and_gate_window_survive_a_restart(tmp_path: Any, stubs: Any) -> None:
    frontier, small = stubs
    cfg = config(f"sqlite:///{tmp_path / 'r.db'}", frontier, small, gates={**GATES, "min_compared": 1000})
    with rollout_gateway(cfg) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        manager.store.advance("triage", reason="test: straight to canary-50", actor="test")
        on_loop(gw, manager.runtimes["triage"].router.refresh())
        for text in list(GOOD)[:40]:
            ask(client, text)
        settle(gw)
        before = manager.status()["triage"]
    assert before["stage"] == "canary-10" and before["window"]["compared"] == 40
    with rollout_gateway(cfg) as (gw, manager):
        after = manager.status()["triage"]
        assert after["stage"] == "canary-10" and after["version"] == before["version"]
        for key in ("compared", "agreement", "answers", "errors", "checked", "flagged"):
            assert after["window"][key] == before["window"][key], key
        assert after["window"]["latency_samples"] == before["window"]["latency_samples"]


def test_shadow_adds_no_caller_latency_and_never_changes_the_answer(tmp_path: Any, stubs: Any) -> None:
    frontier, _ = stubs
    answers = {k: "billing" if v == "technical" else "technical" for k, v in GOOD.items()}  # always wrong, slowly
    with start_stub(model="slow", answers=answers, latency_ms=300) as slow:
        cfg = config(f"sqlite:///{tmp_path / 'r.db'}", frontier, slow,
                     gates={**GATES, "rollback_min_compared": 1000, "min_compared": 1000})
        cfg["workloads"]["plain"] = {"tier": "frontier"}
        with rollout_gateway(cfg) as (gw, manager):
            client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
            timings: dict[str, list[float]] = {"triage": [], "plain": []}
            for i, text in enumerate(list(GOOD)[:40]):
                for workload in ("triage", "plain") if i % 2 else ("plain", "triage"):
                    t = time.perf_counter()
                    r = client.chat.completions.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": text}],
                        extra_headers={"X-Tiergate-Workload": workload})
                    timings[workload].append((time.perf_counter() - t) * 1000)
                    assert r.parse().choices[0].message.content == GOOD[text]
                    assert r.headers["x-tiergate-tier"] == "frontier"
            settle(gw)
            status = manager.status()["triage"]
        shadowed = sorted(timings["triage"])
        plain = sorted(timings["plain"])
        p50s, p95s = shadowed[len(shadowed) // 2], shadowed[int(len(shadowed) * 0.95) - 1]
        p50p, p95p = plain[len(plain) // 2], plain[int(len(plain) * 0.95) - 1]
        print(f"caller latency with a 300 ms shadow: p50 {p50s:.1f} ms p95 {p95s:.1f} ms; "
              f"without shadow: p50 {p50p:.1f} ms p95 {p95p:.1f} ms")
        assert p95s < 150, f"shadowed requests waited for the 300 ms candidate (p95 {p95s:.0f} ms)"
        assert p50s < p50p + 20
        assert status["stage"] == "shadow" and status["window"]["compared"] == 40
        assert status["window"]["agreement"] == 0.0  # scored, stored, and never shown to the caller
        assert len(slow.requests()) == 40


def test_canary_split_is_sticky_per_caller_key(tmp_path: Any, stubs: Any) -> None:
    frontier, small = stubs
    cfg = config(f"sqlite:///{tmp_path / 'r.db'}", frontier, small, verify_fraction=0.0, shadow_fraction=0.0,
                 gates={**GATES, "min_compared": 1000})
    with rollout_gateway(cfg) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        manager.store.advance("triage", reason="test", actor="test")
        on_loop(gw, manager.runtimes["triage"].router.refresh())
        tiers = {}
        for i in range(40):
            key = f"caller-{i % 20}"
            tier = ask(client, f"good {i}", key=key).headers["x-tiergate-tier"]
            assert tiers.setdefault(key, tier) == tier, "a caller changed sides"
        canary = [k for k, t in tiers.items() if t == "small"]
        manager.store.advance("triage", reason="test", actor="test")  # 10% -> 50%: the 10% stay on the candidate
        on_loop(gw, manager.runtimes["triage"].router.refresh())
        for key in canary:
            assert ask(client, "good 1", key=key).headers["x-tiergate-tier"] == "small"
        shares = [ask(client, "good 2", key=f"k{i}").headers["x-tiergate-tier"] for i in range(100)]
        assert 30 <= shares.count("small") <= 70


def test_manual_control_from_the_admin_api_and_the_cli(tmp_path: Any, stubs: Any) -> None:
    from tests.test_monitor_gateway import cli_app
    from tiergate.rollout.serve import with_rollout

    frontier, small = stubs
    db = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = config(db, frontier, small, refresh_s=0.1)
    cfg["auth"]["admin_token"] = "adm"
    with rollout_gateway(cfg) as (gw, manager):
        with_rollout(gw.app)
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        admin = {"Authorization": "Bearer adm"}
        import httpx

        http = httpx.Client(base_url=gw.url, timeout=30, trust_env=False)
        assert http.post("/admin/rollouts/triage/hold").status_code == 401
        r = http.post("/admin/rollouts/triage/hold", headers=admin, json={"reason": "freeze for the audit"})
        assert r.status_code == 200 and r.json()["held"] is True
        for text in list(GOOD)[:35]:  # the gates pass, but a held rollout does not advance
            ask(client, text)
            settle(gw)
        status = http.get("/admin/rollouts/triage", headers=admin).json()
        assert status["stage"] == "shadow" and status["next_action"] == "held"  # passing, but held
        assert http.post("/admin/rollouts/triage/advance", headers=admin, json={"to": "canary-50"}).json()["stage"] \
            == "canary-50"
        assert http.post("/admin/rollouts/triage/advance", headers=admin, json={"to": "nope"}).status_code == 400

        runner, app = CliRunner(), cli_app()
        out = runner.invoke(app, ["rollout", "rollback", "triage", "--db", db, "-r", "pager says no"])
        assert out.exit_code == 0 and "rolled_back" in out.output, out.output
        deadline = time.monotonic() + 3
        while ask(client, "good 1").headers["x-tiergate-route-reason"] != "rollout:rolled_back":
            assert time.monotonic() < deadline, "the gateway did not adopt the CLI's rollback"
            time.sleep(0.05)
        assert runner.invoke(app, ["rollout", "start", "triage", "--db", db]).exit_code == 0
        assert runner.invoke(app, ["rollout", "resume", "triage", "--db", db]).exit_code == 0
        listed = http.get("/admin/rollouts", headers=admin).json()["data"]
        assert [(x["workload"], x["stage"], x["held"]) for x in listed] == [("triage", "shadow", False)]
        hist = http.get("/admin/rollouts/triage/history", headers=admin).json()["data"]
    assert [(h["to_stage"], h["actor"]) for h in hist] == [
        ("shadow", "config"), ("shadow", "admin"), ("canary-50", "admin"), ("rolled_back", "cli"), ("shadow", "cli"),
        ("shadow", "cli")]
    assert hist[3]["reason"] == "pager says no" and hist[1]["reason"] == "freeze for the audit"
    shown = runner.invoke(app, ["rollout", "history", "triage", "--db", db, "--json"])
    assert json.loads(shown.output)[-1]["reason"] == "resumed from the CLI"
    status = runner.invoke(app, ["rollout", "status", "--db", db, "--json"])
    assert status.exit_code == 0 and json.loads(status.output)[0]["stage"] == "shadow"


def test_gateways_sharing_a_store_judge_on_all_their_evidence(tmp_path: Any, stubs: Any) -> None:
    """Two gateway processes on one database each see half the traffic. Neither has the 10 pairs the rollback
    needs on its own; rebuilding the window from the store every `shared_window_s` gives each the whole."""
    frontier, small = stubs
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with rollout_gateway(config(url, frontier, small, shared_window_s=0.2)) as (a, ma), \
            rollout_gateway(config(url, frontier, small, shared_window_s=0.2)) as (b, mb):
        clients = [(gw, openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)) for gw in (a, b)]
        for i in range(12):  # the candidate disagrees on every pair: 6 pairs in each process
            gw, client = clients[i % 2]
            ask(client, f"bad {i}")
            settle(gw)
        assert ma.runtimes["triage"].observed == mb.runtimes["triage"].observed == 6
        deadline = time.monotonic() + 5
        while RolloutStore(open_store(url)).require("triage").stage != "rolled_back":
            assert time.monotonic() < deadline, "no process rolled back on the shared evidence"
            time.sleep(0.05)
        history = RolloutStore(open_store(url)).history("triage")
        assert "over 1" in history[-1]["reason"] and history[-1]["actor"] == "gates"  # 10+ pairs, not 6


def test_passing_gates_wait_for_the_stage_age_and_for_drift_alarms_to_clear(tmp_path: Any, stubs: Any) -> None:
    frontier, small = stubs

    class Alarming:  # a drift monitor that is alarming for triage
        checks = ["input"]

        def alarming(self, workload: str) -> list[str]:
            return list(self.checks) if workload == "triage" else []

    gates = {**GATES, "min_compared": 10}
    cfg = config(f"sqlite:///{tmp_path / 'r.db'}", frontier, small, gates={**gates, "min_stage_s": 3600})
    with rollout_gateway(cfg) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        for text in list(GOOD)[:30]:
            ask(client, text)
            settle(gw)
        assert stage(manager) == "shadow"
        status = manager.status()["triage"]
        assert status["next_action"] == "wait" and "min_stage_s 3600" in status["advance_blocked"]
    cfg = config(f"sqlite:///{tmp_path / 'r2.db'}", frontier, small, gates=gates)
    with rollout_gateway(cfg) as (gw, manager):
        monitor = Alarming()
        gw.gateway.observers.append(monitor)
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        for text in list(GOOD)[:30]:
            ask(client, text)
            settle(gw)
        assert stage(manager) == "shadow"
        assert "drift alarm (input)" in manager.status()["triage"]["advance_blocked"]
        monitor.checks = []  # the alarm clears: the next good pair advances
        ask(client, "good 40")
        settle(gw)
        assert stage(manager) == "canary-10"


def test_status_marks_a_rollout_the_config_no_longer_has(tmp_path: Any, stubs: Any) -> None:
    from tiergate.config import parse_config
    from tiergate.rollout.inspect import rollout_status
    from tiergate.rollout.state import default_stages

    frontier, small = stubs
    engine = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    RolloutStore(engine).start("ghost", primary="frontier", candidate="small", stages=default_stages([10, 50]),
                               actor="test", reason="test")
    cfg = parse_config(config(f"sqlite:///{tmp_path / 'r.db'}", frontier, small))
    rows = {r["workload"]: r for r in rollout_status(engine, cfg)}
    assert rows["ghost"]["configured"] is False and "window" not in rows["ghost"]


def test_pairs_show_what_the_candidate_got_wrong(tmp_path: Any, stubs: Any) -> None:
    from tiergate.rollout.inspect import shadow_pairs

    frontier, small = stubs
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with rollout_gateway(config(url, frontier, small)) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        for text in ["good 1", "bad 1", "good 2", "bad 2"]:
            ask(client, text)
            settle(gw)
        engine = gw.gateway.engine
        every = shadow_pairs(engine, "triage")
        wrong = shadow_pairs(engine, "triage", disagree_only=True)
    assert len(every) == 4 and [p["agree"] for p in every] == [False, True, False, True]  # newest first
    assert [p["input"] for p in wrong] == ["bad 2", "bad 1"]
    assert wrong[0]["primary_tier"] == "frontier" and wrong[0]["primary_answer"] == BAD["bad 2"]
    assert wrong[0]["candidate_tier"] == "small" and wrong[0]["candidate_answer"] == "technical"
    result = CliRunner().invoke(_cli(), ["rollout", "pairs", "triage", "--disagree", "--db", url, "--json"])
    assert result.exit_code == 0 and [p["input"] for p in json.loads(result.output)] == ["bad 2", "bad 1"]


def _cli() -> Any:
    from tests.test_monitor_gateway import cli_app

    return cli_app()


def test_admin_lists_a_stored_rollout_this_gateway_does_not_route(tmp_path: Any, stubs: Any) -> None:
    """A rollout in the shared store that this process has no router for is shown from the store as it is."""
    import httpx

    from tiergate.rollout.state import default_stages

    frontier, small = stubs
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = config(url, frontier, small)
    cfg["auth"]["admin_token"] = "adm"
    with rollout_gateway(cfg) as (gw, _):
        RolloutStore(gw.gateway.engine).start("ghost", primary="frontier", candidate="small",
                                              stages=default_stages([10]), actor="test", reason="elsewhere")
        r = httpx.get(gw.url + "/admin/rollouts/ghost", headers={"Authorization": "Bearer adm"})
        assert r.status_code == 200 and (r.json()["workload"], r.json()["stage"]) == ("ghost", "shadow")
        listed = httpx.get(gw.url + "/admin/rollouts", headers={"Authorization": "Bearer adm"}).json()["data"]
        assert {row["workload"] for row in listed} == {"triage", "ghost"}


def test_an_idle_gateway_routes_its_next_request_on_the_current_stage(tmp_path: Any, stubs: Any) -> None:
    """A rollback from the CLI while no request arrives: the first request afterwards must not reach the
    candidate. The stage was re-read only when a request came, and that request was decided on the old stage."""
    from tests.test_monitor_gateway import cli_app

    frontier, small = stubs
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with rollout_gateway(config(db, frontier, small, refresh_s=0.2)) as (gw, manager):
        client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        runner, app = CliRunner(), cli_app()
        assert runner.invoke(app, ["rollout", "advance", "triage", "--db", db, "--to", "full"]).exit_code == 0
        time.sleep(0.6)  # idle for three refresh periods
        assert ask(client, "good 1").headers["x-tiergate-route-reason"] == "rollout:full"
        assert runner.invoke(app, ["rollout", "rollback", "triage", "--db", db, "-r", "bad"]).exit_code == 0
        time.sleep(0.6)
        assert ask(client, "good 2").headers["x-tiergate-route-reason"] == "rollout:rolled_back"
        assert stage(manager) == "rolled_back"
