"""Turning records into gate observations: live candidate answers, shadow pairs, and stored records (restart).

    rt = Runtime.build(router, config, specs)
    obs = served_observation(rt, rec)                    # a live candidate answer (canary / full)
    obs, note = pair_observation(rt, primary, shadow)    # a shadow pair; `note` goes into the shadow record
    window = rebuild_window(engine, rt)                  # the current stage's observations, from the store

A shadow pair is either the candidate answering in the shadows of the primary (`side: shadow`: the candidate's
error, latency and hallucination flags are known from the shadow call) or the primary verifying a live
candidate answer (`side: verify`: only agreement; the live answer's own facts come from its record).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from tiergate.data.dataset import input_text
from tiergate.monitor.hallucination import CheckSpec, check_answer
from tiergate.rollout.compare import DEFAULT_AGREE_AT, compare_answers
from tiergate.rollout.gates import Observation, Verdict, Window
from tiergate.rollout.router import RolloutRouter
from tiergate.rollout.state import ROLLED_BACK

CANDIDATE_REASONS = ("rollout:canary", "rollout:full")


@dataclass
class Runtime:
    """One workload's rollout in this process: its router (and state), gate window and comparison settings."""

    router: RolloutRouter
    window: Window
    spec: CheckSpec
    task: str | None
    labels: list[str] | None
    agree_at: float
    pending: bool = False
    last_verdict: Verdict | None = None
    started: bool = False
    observed: int = 0
    """observations this process has made (a running count: what a rebuild from the store may not hold yet)"""
    recent: deque[tuple[int, Observation]] = field(default_factory=lambda: deque(maxlen=1000))
    """the latest observations with their counts, re-added on top of a window rebuilt from the store"""

    @classmethod
    def build(cls, router: RolloutRouter, config: Any, specs: dict[str, CheckSpec]) -> Runtime:
        wl = router.workload
        wcfg = config.workloads.get(wl)
        spec = specs.get(wl) or CheckSpec()
        task = router.opts.task or spec.task or (wcfg.task if wcfg is not None else None)
        labels = router.opts.labels or spec.labels
        agree_at = router.opts.agree_at
        if agree_at is None:
            agree_at = DEFAULT_AGREE_AT.get(task or "", 1.0)
        return cls(router, Window(router.opts.window), spec, task, labels, agree_at)

    @property
    def workload(self) -> str:
        return self.router.workload


def check_flags(rt: Runtime, rec: dict[str, Any], answer: str | None, confidence: float | None) -> list[str]:
    spec = rt.spec
    if rt.labels and not spec.labels:
        spec = spec.model_copy(update={"labels": rt.labels})
    text = input_text(rec["messages"]) if rec.get("messages") else ""
    return check_answer(spec, text, answer, confidence=confidence, task=rt.task)


def served_observation(rt: Runtime, rec: dict[str, Any]) -> Observation | None:
    """A live answer of the candidate (canary or full), or a candidate failure the fallback tier covered."""
    reason = rec.get("route_reason") or ""
    response = rec.get("response") or {}
    candidate = rt.router.state.candidate
    if reason == "fallback":
        decided = (response.get("decided") or {}).get("reason", "")
        if decided in CANDIDATE_REASONS and candidate in (response.get("fallback_from") or []):
            return Observation(error=True)
        return None
    if reason not in CANDIDATE_REASONS or rec.get("tier") != candidate:
        return None
    if rec.get("status") != "ok":
        return Observation(error=True)
    flags = check_flags(rt, rec, rec.get("answer"), response.get("confidence"))
    return Observation(error=False, latency_ms=rec.get("latency_ms"), flagged=bool(flags), flags=tuple(flags))


def pair_observation(rt: Runtime, primary: dict[str, Any], shadow: dict[str, Any]
                     ) -> tuple[Observation | None, dict[str, Any]]:
    state = rt.router.state
    if not (primary.get("route_reason") or "").startswith("rollout:"):
        return None, {}
    note: dict[str, Any] = {"stage": state.stage, "version": state.version}
    if shadow.get("tier") == state.candidate:
        note["side"] = "shadow"
        if shadow.get("status") != "ok":
            return Observation(error=True), {**note, "error": True}
        ref, cand, cand_rec = primary.get("answer"), shadow.get("answer"), shadow
    elif shadow.get("tier") == state.primary and primary.get("tier") == state.candidate:
        note["side"] = "verify"
        if shadow.get("status") != "ok":
            return None, {}
        ref, cand, cand_rec = shadow.get("answer"), primary.get("answer"), None
    else:
        return None, {}
    score = compare_answers(rt.task, ref, cand, rt.labels)
    agree = score >= rt.agree_at
    note.update(score=round(score, 4), agree=agree)
    if cand_rec is None:  # the live answer's errors, latency and flags came through its own record
        return Observation(agree=agree, score=score), note
    flags = check_flags(rt, primary, cand, (cand_rec.get("response") or {}).get("confidence"))
    note["flags"] = flags
    return Observation(agree=agree, score=score, error=False, latency_ms=cand_rec.get("latency_ms"),
                       flagged=bool(flags), flags=tuple(flags)), note


def stored_observation(rt: Runtime, rec: dict[str, Any]) -> Observation | None:
    """The observation a stored record made when it was live (shadow records carry their scored note)."""
    if rec["role"] == "primary":
        return served_observation(rt, rec)
    note = (rec.get("response") or {}).get("rollout")
    if not note:
        return None
    if note.get("side") == "verify":
        return Observation(agree=note.get("agree"), score=note.get("score"))
    if note.get("error"):
        return Observation(error=True)
    flags = tuple(note.get("flags") or ())
    return Observation(agree=note.get("agree"), score=note.get("score"), error=False,
                       latency_ms=rec.get("latency_ms"), flagged=bool(flags), flags=flags)


def rebuild_window(engine: Engine, rt: Runtime) -> Window:
    """The current stage's observations, recomputed from the records stored since the stage began."""
    from tiergate.store.records import query_records

    state = rt.router.state
    window = Window(rt.window.maxlen)
    if state.stage == ROLLED_BACK:
        return window
    limit = window.maxlen
    rows = query_records(engine, workload=state.workload, role="shadow", since=state.stage_since, limit=limit)
    rows += [r for r in query_records(engine, workload=state.workload, role="primary", since=state.stage_since,
                                      limit=limit)
             if r.get("route_reason") in (*CANDIDATE_REASONS, "fallback")]
    rows.sort(key=lambda r: (r["created_at"], r["id"]))
    for rec in rows:
        obs = stored_observation(rt, rec)
        if obs is not None:
            window.add(obs)
    return window
