"""Rollout and monitor endpoints of the admin API (behind the admin token).

    GET  /admin/rollouts                          every rollout: stage, tiers, held, live gate window
    GET  /admin/rollouts/{workload}               one rollout with its gate statistics and what it waits for
                                                  (?view=routing: the stage this process routes by, unrefreshed)
    GET  /admin/rollouts/{workload}/history       the audit log of its transitions
    POST /admin/rollouts/{workload}/advance       {"to": "full"?, "reason": "..."}: next stage (or `to`)
    POST /admin/rollouts/{workload}/hold          no automatic advance (automatic rollback stays armed)
    POST /admin/rollouts/{workload}/resume        automatic advance again
    POST /admin/rollouts/{workload}/rollback      {"reason": "..."}: the primary answers everything
    POST /admin/rollouts/{workload}/start         back to shadow (after a rollback, or for a new candidate)
    GET  /admin/monitor                           drift and hallucination status of every workload

A change made here is written to the store and adopted by this process at once; other gateway processes
sharing the database adopt it within their `refresh_s`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiergate.errors import InvalidRequest, NotFound
from tiergate.gateway.admin import admin, json_body, json_response
from tiergate.rollout.state import ROLLED_BACK, RolloutState, RolloutStore


def _manager(gw: Any) -> Any:
    from tiergate.rollout.manager import RolloutManager

    return next((o for o in gw.observers if isinstance(o, RolloutManager)), None)


def _store(gw: Any) -> RolloutStore:
    manager = _manager(gw)
    return manager.store if manager is not None else RolloutStore(gw.engine)


async def _adopt(gw: Any, state: RolloutState) -> dict[str, Any]:
    """The stored state (adopted by this process at once) with this process's gate window."""
    manager = _manager(gw)
    if manager is not None and state.workload in manager.runtimes:
        manager.runtimes[state.workload].router.apply(state)
        return dict(manager.status()[state.workload])
    return state.to_json()


@admin
async def list_rollouts(request: Request, gw: Any) -> Response:
    states = await asyncio.to_thread(_store(gw).list)
    return json_response({"data": [await _adopt(gw, s) for s in states]})


@admin
async def show_rollout(request: Request, gw: Any) -> Response:
    workload = request.path_params["workload"]
    manager = _manager(gw)
    if request.query_params.get("view") == "routing" and manager is not None and workload in manager.runtimes:
        return json_response(manager.status()[workload])  # what this process routes by now, without re-reading
    state = await asyncio.to_thread(_store(gw).require, workload)
    return json_response(await _adopt(gw, state))


@admin
async def history(request: Request, gw: Any) -> Response:
    workload = request.path_params["workload"]
    rows = await asyncio.to_thread(_store(gw).history, workload)
    if not rows:
        raise NotFound(f"no rollout history for workload {workload!r}")
    return json_response({"data": rows})


def _action(kind: str):  # type: ignore[no-untyped-def]
    async def act(request: Request, gw: Any) -> Response:
        workload = request.path_params["workload"]
        body = await json_body(request)
        reason = str(body.get("reason") or f"{kind} via admin API")
        store = _store(gw)
        if kind == "advance":
            to = body.get("to")
            if to is not None and not isinstance(to, str):
                raise InvalidRequest("'to' must be a stage name.", param="to")
            state = await asyncio.to_thread(store.advance, workload, reason=reason, actor="admin", to_stage=to)
        elif kind in ("hold", "resume"):
            state = await asyncio.to_thread(store.set_held, workload, kind == "hold", reason=reason, actor="admin")
        elif kind == "rollback":
            state = await asyncio.to_thread(store.force, workload, ROLLED_BACK, reason=reason, actor="admin")
        else:
            cur = await asyncio.to_thread(store.require, workload)
            state = await asyncio.to_thread(store.start, workload, primary=cur.primary, candidate=cur.candidate,
                                            stages=cur.stages, actor="admin", reason=reason,
                                            candidate_model=cur.candidate_model)
        return json_response(await _adopt(gw, state))

    return admin(act)


@admin
async def monitor_status(request: Request, gw: Any) -> Response:
    from tiergate.monitor.monitor import Monitor
    from tiergate.monitor.status import monitor_status as status

    live = next((o.status() for o in gw.observers if isinstance(o, Monitor)), None)
    stored = await asyncio.to_thread(status, gw.engine, request.query_params.get("workload"))
    return json_response({"live": live, "stored": stored})


routes = [
    Route("/admin/rollouts", list_rollouts, methods=["GET"]),
    Route("/admin/rollouts/{workload}", show_rollout, methods=["GET"]),
    Route("/admin/rollouts/{workload}/history", history, methods=["GET"]),
    *(Route(f"/admin/rollouts/{{workload}}/{kind}", _action(kind), methods=["POST"])
      for kind in ("advance", "hold", "resume", "rollback", "start")),
    Route("/admin/monitor", monitor_status, methods=["GET"]),
]
