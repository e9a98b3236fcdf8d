"""Rollout status from the store alone (no running gateway): for the CLI.

    rollout_status(engine, config)               # every rollout: row, gate window rebuilt from records, verdict
    rollout_options(config, "support-triage")    # the workload's `rollout` router options, or None
    start_options(config, "support-triage", primary="frontier", candidate="small", canary=[10, 50])
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from tiergate.rollout.gates import evaluate, next_action
from tiergate.rollout.router import RolloutOptions, RolloutRouter
from tiergate.rollout.scoring import Runtime, rebuild_window
from tiergate.rollout.state import RolloutStore


def rollout_options(config: Any, workload: str) -> RolloutOptions | None:
    wl = config.workloads.get(workload)
    if wl is None:
        return None
    for spec in wl.policy:
        if spec.kind == "rollout":
            return RolloutOptions.model_validate(spec.model_dump(exclude={"kind"}))
    return None


def start_options(config: Any, workload: str, *, primary: str, candidate: str, canary: list[float],
                  check_tiers: bool = True) -> RolloutOptions:
    """The tiers and canary stages of a (re)started rollout, checked as `config check` checks a `rollout`
    router: known (when `check_tiers`: the config is the gateway's), distinct tiers and increasing canary
    percentages in (0, 100). ConfigError names the flag."""
    from pydantic import ValidationError

    from tiergate.errors import ConfigError

    try:
        opts = RolloutOptions.model_validate({"primary": primary, "candidate": candidate, "canary": canary})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"rollout start {workload}: {msg} (got --canary {' '.join(f'{p:g}' for p in canary)})"
                          if "canary" in msg else f"rollout start {workload}: {msg}") from exc
    for flag, name in (("--primary", primary), ("--candidate", candidate)):
        if check_tiers and name not in config.tiers:
            raise ConfigError(f"rollout start {workload}: {flag} {name!r}: unknown tier "
                              f"(configured: {', '.join(config.tiers) or 'none'})")
    return opts


def _runtime(config: Any, workload: str, store: RolloutStore) -> Runtime | None:
    from tiergate.routing.base import RoutingContext

    opts = rollout_options(config, workload)
    state = store.get(workload)
    if opts is None or state is None:
        return None
    router = RolloutRouter(opts, RoutingContext(tiers=dict(config.tiers), workload=workload))
    router.state = state
    monitor = getattr(config, "monitor", None)
    specs = dict(getattr(monitor, "workloads", None) or {})
    return Runtime.build(router, config, specs)


def rollout_status(engine: Engine, config: Any, workload: str | None = None) -> list[dict[str, Any]]:
    store = RolloutStore(engine)
    states = [store.require(workload)] if workload else store.list()
    out = []
    for state in states:
        row: dict[str, Any] = state.to_json()
        rt = _runtime(config, state.workload, store)
        row["configured"] = rt is not None  # the config has a rollout router for the workload
        if rt is not None:
            window = rebuild_window(engine, rt)
            verdict = evaluate(window, rt.router.opts.gates)
            blocked = _advance_blocker(engine, state, rt.router.opts.gates) if verdict.action == "advance" else None
            row.update(window=verdict.stats, gates=verdict.reasons,
                       next_action=next_action(state.stage, state.held, verdict, blocked))
            if blocked:
                row.update(advance_blocked=blocked)
        out.append(row)
    return out


def _advance_blocker(engine: Engine, state: Any, gates: Any) -> str | None:
    """What the gateway would hold an advance for (`gates.advance_hold`), with the latest stored drift results."""
    import time

    from tiergate.monitor.status import monitor_status
    from tiergate.rollout.gates import advance_hold

    checks = monitor_status(engine, state.workload).get(state.workload, {})
    return advance_hold(gates, time.time() - state.stage_since, sorted(k for k, c in checks.items() if c.get("alarm")))


def shadow_pairs(engine: Engine, workload: str, *, disagree_only: bool = False, limit: int = 20,
                 scan: int = 5000) -> list[dict[str, Any]]:
    """The latest scored pairs of a rollout, newest first: the request's text, the primary's and the candidate's
    answers, whether they agreed (and the score), from the shadow records' notes and their parent records.
    `disagree_only`: only the pairs that did not agree, what an operator reads before trusting or rolling back a
    candidate. At most `scan` recent shadow records are read."""
    from sqlalchemy import select

    from tiergate.data.dataset import input_text
    from tiergate.store.records import iter_records
    from tiergate.store.schema import records as r

    picked: list[dict[str, Any]] = []
    for rec in iter_records(engine, workload=workload, role="shadow", limit=scan, newest_first=True):
        note = (rec.get("response") or {}).get("rollout")
        if not note or "agree" not in note or (disagree_only and note.get("agree") is not False):
            continue
        picked.append({"shadow": rec, "note": note})
        if len(picked) >= limit:
            break
    parents: dict[str, dict[str, Any]] = {}
    ids = [p["shadow"]["parent_request_id"] for p in picked if p["shadow"].get("parent_request_id")]
    if ids:
        with engine.connect() as conn:
            for row in conn.execute(select(r).where(r.c.request_id.in_(ids))):
                parents[row.request_id] = dict(row._mapping)
    out = []
    for p in picked:
        shadow, note = p["shadow"], p["note"]
        parent = parents.get(shadow.get("parent_request_id") or "", {})
        served, checked = (parent, shadow) if note.get("side") == "verify" else (shadow, parent)
        out.append({"at": shadow["created_at"], "request_id": parent.get("request_id"), "stage": note.get("stage"),
                    "side": note.get("side"), "agree": note.get("agree"), "score": note.get("score"),
                    "input": input_text(shadow.get("messages") or parent.get("messages") or ""),
                    "primary_tier": checked.get("tier"), "primary_answer": checked.get("answer"),
                    "candidate_tier": served.get("tier"), "candidate_answer": served.get("answer")})
    return out
