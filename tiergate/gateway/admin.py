"""The admin API under /admin, behind the admin token."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiergate.errors import InvalidRequest, TiergateError
from tiergate.gateway.core import Gateway
from tiergate.gateway.errors import error_response
from tiergate.store import keys as keystore
from tiergate.store.records import query_records


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json")


def admin(handler):  # type: ignore[no-untyped-def]
    async def wrapped(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        try:
            gw.keys.check_admin(request.headers)
            return await handler(request, gw)
        except TiergateError as exc:
            return error_response(exc)

    return wrapped


@admin
async def list_keys(request: Request, gw: Gateway) -> Response:
    return _json({"data": keystore.list_keys(gw.engine)})


@admin
async def create_key(request: Request, gw: Gateway) -> Response:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'name' is required.", param="name")
    key_id, secret = keystore.create_key(gw.engine, name, body.get("workloads"))
    return _json({"id": key_id, "name": name, "key": secret}, 201)


@admin
async def revoke_key(request: Request, gw: Gateway) -> Response:
    keystore.revoke_key(gw.engine, request.path_params["key_id"])
    return _json({"revoked": request.path_params["key_id"]})


@admin
async def records(request: Request, gw: Gateway) -> Response:
    q = request.query_params
    try:
        limit = min(int(q.get("limit", 50)), 1000)
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", param="limit") from None
    rows = query_records(gw.engine, workload=q.get("workload"), tier=q.get("tier"), status=q.get("status"),
                         limit=limit)
    return _json({"data": rows})


routes = [
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/records", records, methods=["GET"]),
]
