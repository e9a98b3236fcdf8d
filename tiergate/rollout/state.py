"""The rollout state machine in the store: one row per workload and an audit log of every transition.

    store = RolloutStore(engine)
    state = store.ensure("triage", primary="frontier", candidate="small", stages=default_stages([10, 50]))
    moved = store.transition("triage", "canary-10", expect_version=state.version, reason="gates passed",
                             actor="gates", stats={...})      # None when another process moved it first
    store.history("triage")                                   # every transition, oldest first

Transitions are compare-and-set on `version` (`UPDATE ... WHERE version = :v`) inside one transaction that
also writes the audit row, so several gateway processes sharing a database agree on the stage: exactly one
of two concurrent transitions from the same version wins, and the loser re-reads the row.

Stages: `shadow`, then `canary-P` for each canary percentage (P% of live traffic to the candidate), then
`full`; `rolled_back` from any of them. A held rollout does not advance automatically (rollback still fires).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tiergate.errors import InvalidRequest, NotFound

SHADOW, FULL, ROLLED_BACK = "shadow", "full", "rolled_back"

metadata = MetaData()

rollouts = Table(
    "rollouts", metadata,
    Column("workload", String(128), primary_key=True),
    Column("stage", String(32), nullable=False, doc="shadow | canary-P | full | rolled_back"),
    Column("stages", JSON, nullable=False, doc="the ladder this rollout climbs, e.g. [shadow, canary-10, ...]"),
    Column("primary_tier", String(128), nullable=False, doc="the tier that answers until cutover"),
    Column("candidate_tier", String(128), nullable=False, doc="the tier being rolled out"),
    Column("candidate_model", Text, doc="model directory the candidate tier serves (set by retrain)"),
    Column("held", Boolean, nullable=False, default=False, doc="no automatic advance while held"),
    Column("version", Integer, nullable=False, doc="bumped by every change: compare-and-set token"),
    Column("stage_since", Float, nullable=False, doc="unix seconds the current stage began"),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, doc="why the last change happened"),
    Column("actor", String(64), doc="gates | cli | admin | config | retrain"),
)

rollout_events = Table(
    "rollout_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workload", String(128), nullable=False),
    Column("from_stage", String(32)),
    Column("to_stage", String(32), nullable=False),
    Column("version", Integer, nullable=False, doc="the row's version after this change"),
    Column("reason", Text),
    Column("actor", String(64)),
    Column("at", Float, nullable=False),
    Column("stats", JSON, doc="gate statistics at the moment of the change"),
)
Index("ix_rollout_events_workload", rollout_events.c.workload, rollout_events.c.id)

monitor_checks = Table(
    "monitor_checks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workload", String(128), nullable=False),
    Column("kind", String(32), nullable=False, doc="input | label | confidence | quality | hallucination"),
    Column("at", Float, nullable=False),
    Column("n", Integer, nullable=False, doc="observations in the window"),
    Column("statistic", Float),
    Column("p_value", Float),
    Column("alarm", Boolean, nullable=False),
    Column("detail", JSON),
)
Index("ix_monitor_checks_workload_at", monitor_checks.c.workload, monitor_checks.c.at)


def ensure_tables(engine: Engine) -> None:
    """Create the tables if the store's migrations have not (idempotent; the migration itself is
    `tiergate.rollout.migrations.m_rollouts_and_monitor`)."""
    from tiergate.rollout.migrations import m_rollouts_and_monitor

    with engine.begin() as conn:
        m_rollouts_and_monitor(conn)


def default_stages(canary: Sequence[float] = (10, 50)) -> list[str]:
    return [SHADOW, *(f"canary-{_fmt(p)}" for p in canary), FULL]


def _fmt(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def canary_percent(stage: str) -> float:
    """Share of live traffic (0-100) the candidate answers in a stage."""
    if stage == FULL:
        return 100.0
    if stage.startswith("canary-"):
        return float(stage.removeprefix("canary-"))
    return 0.0


@dataclass(frozen=True)
class RolloutState:
    workload: str
    stage: str
    stages: list[str]
    primary: str
    candidate: str
    version: int
    stage_since: float
    updated_at: float
    held: bool = False
    candidate_model: str | None = None
    reason: str | None = None
    actor: str | None = None

    @property
    def percent(self) -> float:
        return canary_percent(self.stage)

    def next_stage(self) -> str | None:
        """The stage after this one on the ladder (None at the top or after a rollback)."""
        if self.stage not in self.stages:
            return None
        i = self.stages.index(self.stage)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "stage": self.stage, "percent": self.percent, "stages": self.stages,
                "primary": self.primary, "candidate": self.candidate, "candidate_model": self.candidate_model,
                "held": self.held, "version": self.version, "stage_since": self.stage_since,
                "updated_at": self.updated_at, "reason": self.reason, "actor": self.actor}

    @classmethod
    def from_row(cls, row: Any) -> RolloutState:
        m = row._mapping
        return cls(workload=m["workload"], stage=m["stage"], stages=list(m["stages"]), primary=m["primary_tier"],
                   candidate=m["candidate_tier"], version=int(m["version"]), stage_since=float(m["stage_since"]),
                   updated_at=float(m["updated_at"]), held=bool(m["held"]), candidate_model=m["candidate_model"],
                   reason=m["reason"], actor=m["actor"])


class RolloutStore:
    """Reads and compare-and-set writes of rollout rows; every change writes an audit event."""

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self.engine = engine
        if create:
            ensure_tables(engine)

    def get(self, workload: str) -> RolloutState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.workload == workload)).first()
        return RolloutState.from_row(row) if row else None

    def require(self, workload: str) -> RolloutState:
        state = self.get(workload)
        if state is None:
            raise NotFound(f"no rollout for workload {workload!r} (start one with `tiergate rollout start`)")
        return state

    def list(self) -> list[RolloutState]:
        with self.engine.connect() as conn:
            return [RolloutState.from_row(r) for r in conn.execute(select(rollouts).order_by(rollouts.c.workload))]

    def ensure(self, workload: str, *, primary: str, candidate: str, stages: list[str],
               actor: str = "config") -> RolloutState:
        """The workload's rollout; created at `shadow` when absent, restarted at `shadow` when the configured
        tiers changed (a different candidate is a new rollout)."""
        state = self.get(workload)
        if state is None:
            try:
                return self.start(workload, primary=primary, candidate=candidate, stages=stages, actor=actor,
                                  reason="rollout configured", only_if_absent=True)
            except IntegrityError:  # another process created it first
                state = self.require(workload)
        if (state.primary, state.candidate) != (primary, candidate) or state.stages != stages:
            moved = self.start(workload, primary=primary, candidate=candidate, stages=stages, actor=actor,
                               reason=f"configuration changed: {state.primary}->{state.candidate} became "
                                      f"{primary}->{candidate}")
            return moved
        return state

    def start(self, workload: str, *, primary: str, candidate: str, stages: list[str], actor: str, reason: str,
              candidate_model: str | None = None, only_if_absent: bool = False) -> RolloutState:
        """(Re)start a rollout at `shadow`: creates the row or resets an existing one."""
        if not stages or stages[0] != SHADOW or stages[-1] != FULL:
            raise InvalidRequest(f"stages must run from {SHADOW!r} to {FULL!r}: {stages}")
        now = time.time()
        values = {"stage": SHADOW, "stages": stages, "primary_tier": primary, "candidate_tier": candidate,
                  "candidate_model": candidate_model, "held": False, "stage_since": now, "updated_at": now,
                  "reason": reason, "actor": actor}
        with self.engine.begin() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.workload == workload).with_for_update()).first()
            if row is None:
                conn.execute(insert(rollouts).values(workload=workload, version=1, **values))
                version, before = 1, None
            elif only_if_absent:
                return RolloutState.from_row(row)
            else:
                version, before = int(row._mapping["version"]) + 1, row._mapping["stage"]
                conn.execute(update(rollouts).where(rollouts.c.workload == workload).values(version=version, **values))
            self._event(conn, workload, before, SHADOW, version, reason, actor, None, now)
        return self.require(workload)

    def transition(self, workload: str, to_stage: str, *, expect_version: int, reason: str, actor: str,
                   stats: dict[str, Any] | None = None, held: bool | None = None) -> RolloutState | None:
        """Move to `to_stage` if the row is still at `expect_version`; None when another writer got there first."""
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.workload == workload)).first()
            if row is None:
                raise NotFound(f"no rollout for workload {workload!r}")
            before = RolloutState.from_row(row)
            if to_stage not in before.stages and to_stage != ROLLED_BACK:
                raise InvalidRequest(f"{workload}: unknown stage {to_stage!r}; stages: {', '.join(before.stages)}")
            values: dict[str, Any] = {"stage": to_stage, "version": expect_version + 1, "updated_at": now,
                                      "reason": reason, "actor": actor}
            if to_stage != before.stage:
                values["stage_since"] = now
            if held is not None:
                values["held"] = held
            res = conn.execute(update(rollouts).where(rollouts.c.workload == workload)
                               .where(rollouts.c.version == expect_version).values(**values))
            if res.rowcount != 1:
                return None
            self._event(conn, workload, before.stage, to_stage, expect_version + 1, reason, actor, stats, now)
        return self.get(workload)

    def set_held(self, workload: str, held: bool, *, reason: str, actor: str) -> RolloutState:
        """Hold (no automatic advance) or resume; retried until it lands, whatever else changes the row."""
        for _ in range(20):
            state = self.require(workload)
            moved = self.transition(workload, state.stage, expect_version=state.version, reason=reason,
                                    actor=actor, held=held)
            if moved is not None:
                return moved
        raise InvalidRequest(f"{workload}: the rollout kept changing; try again")

    def force(self, workload: str, to_stage: str, *, reason: str, actor: str,
              stats: dict[str, Any] | None = None) -> RolloutState:
        """A manual transition: applied whatever the current version is."""
        for _ in range(20):
            state = self.require(workload)
            moved = self.transition(workload, to_stage, expect_version=state.version, reason=reason, actor=actor,
                                    stats=stats)
            if moved is not None:
                return moved
        raise InvalidRequest(f"{workload}: the rollout kept changing; try again")

    def advance(self, workload: str, *, reason: str, actor: str, to_stage: str | None = None) -> RolloutState:
        """Move up the ladder: to the next stage, or to `to_stage` above the current one (a step back is a
        rollback or a new start, not an advance: it would be logged as one)."""
        state = self.require(workload)
        target = to_stage or state.next_stage()
        if target is None or state.stage not in state.stages:
            raise InvalidRequest(f"{workload} is at {state.stage!r}: nothing to advance to "
                                 "(after a rollback, `rollout start` begins again at shadow)")
        if target == ROLLED_BACK:
            raise InvalidRequest(f"{workload}: {ROLLED_BACK!r} is not an advance; use `rollout rollback`")
        if target not in state.stages:
            raise InvalidRequest(f"{workload}: unknown stage {target!r}; stages: {', '.join(state.stages)}")
        here, there = state.stages.index(state.stage), state.stages.index(target)
        if there == here:
            raise InvalidRequest(f"{workload} is already at {target!r}; `rollout hold` keeps it there")
        if there < here:
            raise InvalidRequest(f"{workload}: {target!r} is below the current stage {state.stage!r}: advance only "
                                 "moves up; use `rollout rollback` (all traffic to the primary) or `rollout start` "
                                 "(back to shadow)")
        return self.force(workload, target, reason=reason, actor=actor)

    def set_candidate_model(self, workload: str, model: str | None, *, reason: str, actor: str) -> RolloutState:
        state = self.require(workload)
        return self.start(workload, primary=state.primary, candidate=state.candidate, stages=state.stages,
                          actor=actor, reason=reason, candidate_model=model)

    def history(self, workload: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        q = select(rollout_events).order_by(rollout_events.c.id.desc())
        if workload is not None:
            q = q.where(rollout_events.c.workload == workload)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        return rows[::-1]

    @staticmethod
    def _event(conn: Connection, workload: str, before: str | None, after: str, version: int, reason: str,
               actor: str, stats: dict[str, Any] | None, at: float) -> None:
        conn.execute(insert(rollout_events).values(workload=workload, from_stage=before, to_stage=after,
                                                   version=version, reason=reason, actor=actor, at=at,
                                                   stats=stats))
