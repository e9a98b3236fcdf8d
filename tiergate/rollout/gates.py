"""Gates: when a rollout may advance and when it must roll back, from a sliding window of observations.

    window = Window(maxlen=500)
    window.add(Observation(agree=True, error=False, latency_ms=12.0, flagged=False))
    verdict = evaluate(window, GateConfig(min_compared=200, agreement=0.95, confidence=0.95))
    verdict.action      # "advance" | "rollback" | None
    verdict.reasons     # why, in words; verdict.stats: the numbers behind it

Agreement (the candidate's answer agrees with the primary's, by the task's comparator) advances only when the
Wilson score lower bound at `confidence` is at or above the threshold with at least `min_compared` pairs; it
rolls back as soon as the Wilson *upper* bound at `rollback_confidence` falls below the threshold (the
candidate is worse with that confidence) once `rollback_min_compared` pairs are in. Rollback bounds are
stricter (99% by default) because they are checked after every observation, which inflates the chance that
some check of a good candidate fails by luck. Error and hallucination rates roll back when their
Wilson lower bound exceeds the limit, and must be within the limit (point estimate) to advance; p95 latency
must be within its limit to advance and rolls back above it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tiergate.evaluate.metrics import wilson_interval


class GateConfig(BaseModel):
    """Thresholds of the rollout gates (in a `rollout` router's `gates:` mapping)."""

    model_config = ConfigDict(extra="forbid")

    min_compared: int = Field(200, ge=1, description="compared pairs needed in a stage before it may advance")
    agreement: float = Field(0.95, ge=0, le=1, description="agreement (or quality) the candidate must reach")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of the bound that advances")
    rollback_confidence: float = Field(0.99, gt=0.5, lt=1,
                                       description="one-sided confidence of the bounds that roll back (stricter: "
                                                   "they are checked after every observation)")
    rollback_min_compared: int = Field(20, ge=1, description="pairs needed before agreement can roll back")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="candidate error rate allowed")
    max_p95_latency_ms: float | None = Field(None, gt=0, description="candidate p95 latency allowed (None: no gate)")
    min_latency_samples: int = Field(20, ge=1, description="latency samples needed before the latency gate acts")
    max_hallucination_rate: float = Field(0.02, ge=0, le=1,
                                          description="answers flagged by hallucination checks allowed")
    min_rate_samples: int = Field(20, ge=1, description="answers needed before error/hallucination rates roll back")
    min_stage_s: float = Field(0.0, ge=0, description="seconds a stage must last before it may advance (a canary "
                                                         "should see more than a burst: an hour or a day in production)")
    hold_on_drift: bool = Field(True, description="no automatic advance while the workload's drift monitor alarms "
                                                   "(rollback stays armed)")


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing learned about the candidate; each field may be unknown (None)."""

    agree: bool | None = None
    score: float | None = None
    error: bool | None = None
    latency_ms: float | None = None
    flagged: bool | None = None
    flags: tuple[str, ...] = ()


class Window:
    """The last `maxlen` observations of the current stage, with running tallies (cheap to judge per request)."""

    def __init__(self, maxlen: int = 500) -> None:
        self.maxlen = maxlen
        self.items: deque[Observation] = deque()
        self._tally: dict[str, float] = {}
        self._flags: dict[str, int] = {}

    def _count(self, obs: Observation, sign: int) -> None:
        t = self._tally
        for name, value in (("agree", obs.agree), ("error", obs.error), ("flagged", obs.flagged)):
            if value is not None:
                t[name + "_n"] = t.get(name + "_n", 0) + sign
                t[name] = t.get(name, 0) + sign * int(value)
        if obs.score is not None:
            t["score_n"] = t.get("score_n", 0) + sign
            t["score"] = t.get("score", 0.0) + sign * obs.score
        for f in obs.flags:
            key = f.split(":", 1)[0]
            self._flags[key] = self._flags.get(key, 0) + sign

    def add(self, obs: Observation) -> None:
        self.items.append(obs)
        self._count(obs, 1)
        while len(self.items) > self.maxlen:
            self._count(self.items.popleft(), -1)

    def clear(self) -> None:
        self.items.clear()
        self._tally.clear()
        self._flags.clear()

    def __len__(self) -> int:
        return len(self.items)

    def stats(self, confidence: float = 0.95, latency: bool = True, rollback_confidence: float | None = None
              ) -> dict[str, Any]:
        """Counts, rates and Wilson bounds (advance bounds at `confidence`, rollback bounds at
        `rollback_confidence`, default the same); `latency=False` skips the p95 (the one O(window) figure)."""
        t = self._tally
        n_agree, agree = int(t.get("agree_n", 0)), int(t.get("agree", 0))
        n_err, err = int(t.get("error_n", 0)), int(t.get("error", 0))
        n_flag, flagged = int(t.get("flagged_n", 0)), int(t.get("flagged", 0))
        lat = [o.latency_ms for o in self.items if o.latency_ms is not None] if latency else []
        rb = rollback_confidence or confidence
        a_lo, _ = wilson_interval(agree, n_agree, confidence)
        _, a_hi = wilson_interval(agree, n_agree, rb)
        e_lo, _ = wilson_interval(err, n_err, rb)
        h_lo, _ = wilson_interval(flagged, n_flag, rb)
        return {
            "compared": n_agree, "agreement": agree / n_agree if n_agree else None,
            "agreement_lower": a_lo, "agreement_upper": a_hi,
            "mean_score": t["score"] / t["score_n"] if t.get("score_n") else None,
            "answers": n_err, "errors": err, "error_rate": err / n_err if n_err else None,
            "error_rate_lower": e_lo,
            "latency_samples": len(lat), "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
            "checked": n_flag, "flagged": flagged, "hallucination_rate": flagged / n_flag if n_flag else None,
            "hallucination_rate_lower": h_lo, "flags": {k: v for k, v in self._flags.items() if v},
            "confidence": confidence, "rollback_confidence": rb,
        }


@dataclass(frozen=True)
class Verdict:
    action: Literal["advance", "rollback"] | None
    reasons: list[str]
    stats: dict[str, Any]


def evaluate(window: Window, gates: GateConfig, *, request_path: bool = False) -> Verdict:
    """Judge the window; a failing gate wins over everything (in shadow it stops a candidate before it serves).
    On the request path (`request_path`), the p95 latency is computed only when a latency gate is set."""
    s = window.stats(gates.confidence, latency=gates.max_p95_latency_ms is not None or not request_path,
                     rollback_confidence=gates.rollback_confidence)
    fail: list[str] = []
    if s["compared"] >= gates.rollback_min_compared and s["agreement_upper"] < gates.agreement:
        fail.append(f"agreement {s['agreement']:.3f} over {s['compared']} pairs: upper bound "
                    f"{s['agreement_upper']:.3f} < {gates.agreement} at {gates.rollback_confidence:.0%} confidence")
    if s["answers"] >= gates.min_rate_samples and s["error_rate_lower"] > gates.max_error_rate:
        fail.append(f"error rate {s['error_rate']:.3f} over {s['answers']} answers: lower bound "
                    f"{s['error_rate_lower']:.3f} > {gates.max_error_rate}")
    if s["checked"] >= gates.min_rate_samples and s["hallucination_rate_lower"] > gates.max_hallucination_rate:
        fail.append(f"hallucination rate {s['hallucination_rate']:.3f} over {s['checked']} answers "
                    f"({_flags(s['flags'])}): lower bound {s['hallucination_rate_lower']:.3f} > "
                    f"{gates.max_hallucination_rate}")
    if (gates.max_p95_latency_ms is not None and s["latency_samples"] >= gates.min_latency_samples
            and s["latency_ms_p95"] > gates.max_p95_latency_ms):
        fail.append(f"p95 latency {s['latency_ms_p95']:.0f} ms > {gates.max_p95_latency_ms:.0f} ms "
                    f"over {s['latency_samples']} answers")
    if fail:
        return Verdict("rollback", fail, s)
    wait: list[str] = []
    if s["compared"] < gates.min_compared:
        wait.append(f"{s['compared']}/{gates.min_compared} pairs compared")
    elif s["agreement_lower"] < gates.agreement:
        wait.append(f"agreement lower bound {s['agreement_lower']:.3f} < {gates.agreement}")
    if s["error_rate"] is not None and s["error_rate"] > gates.max_error_rate:
        wait.append(f"error rate {s['error_rate']:.3f} > {gates.max_error_rate}")
    if s["hallucination_rate"] is not None and s["hallucination_rate"] > gates.max_hallucination_rate:
        wait.append(f"hallucination rate {s['hallucination_rate']:.3f} > {gates.max_hallucination_rate}")
    if gates.max_p95_latency_ms is not None and (s["latency_samples"] < gates.min_latency_samples):
        wait.append(f"{s['latency_samples']}/{gates.min_latency_samples} latency samples")
    if wait:
        return Verdict(None, wait, s)
    return Verdict("advance", [f"agreement {s['agreement']:.3f} over {s['compared']} pairs, lower bound "
                               f"{s['agreement_lower']:.3f} >= {gates.agreement} at {gates.confidence:.0%}"], s)


def _flags(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def advance_hold(gates: GateConfig, stage_age_s: float, alarming: list[str]) -> str | None:
    """Why passing gates may not advance a stage yet, or None: the stage is younger than `min_stage_s`, and/or
    drift checks are alarming for the workload (`hold_on_drift`); every reason that holds, so that a drift alarm
    is not hidden until the stage is old enough. The gateway passes its monitor's live alarms, `rollout status`
    the latest stored ones."""
    reasons = []
    if stage_age_s < gates.min_stage_s:
        reasons.append(f"stage is {stage_age_s:.0f}s old; min_stage_s {gates.min_stage_s:g}")
    if gates.hold_on_drift and alarming:
        reasons.append(f"drift alarm ({', '.join(alarming)}): advance held until it clears")
    return "; ".join(reasons) or None


def next_action(stage: str, held: bool, verdict: Verdict, blocked: str | None) -> str:
    """What the gates lead to next, as `rollout status` and the admin API show it: `rollback` (a gate fails),
    `advance`, `wait` (more evidence, or an advance hold), `held` (passing gates, but an operator holds the
    rollout), or `none` (rolled back, or at full: nothing to advance to, though a failing gate still rolls back)."""
    if stage == "rolled_back":
        return "none"
    if verdict.action == "rollback":
        return "rollback"
    if stage == "full":
        return "none"
    if verdict.action == "advance":
        return "held" if held else "wait" if blocked else "advance"
    return "wait"
