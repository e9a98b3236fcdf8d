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


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json")


def admin(handler):  # type: ignore[no-untyped-def]
    """An admin route: the admin token checked, errors answered in OpenAI's shape."""

    async def wrapped(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        try:
            gw.keys.check_admin(request.headers)
            return await handler(request, gw)
        except TiergateError as exc:
            return error_response(exc)

    return wrapped


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body)."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


@admin
async def list_keys(request: Request, gw: Gateway) -> Response:
    return json_response({"data": keystore.list_keys(gw.engine)})


@admin
async def create_key(request: Request, gw: Gateway) -> Response:
    body = await json_body(request)
    key_id, secret = keystore.create_key(gw.engine, body.get("name"), body.get("workloads"))
    name = body["name"]
    return json_response({"id": key_id, "name": name, "key": secret}, 201)


@admin
async def revoke_key(request: Request, gw: Gateway) -> Response:
    keystore.revoke_key(gw.engine, request.path_params["key_id"])
    return json_response({"revoked": request.path_params["key_id"]})


@admin
async def records(request: Request, gw: Gateway) -> Response:
    q = request.query_params
    try:
        limit = int(q.get("limit", 50))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise InvalidRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    rows = query_records(gw.engine, workload=q.get("workload"), tier=q.get("tier"), status=q.get("status"),
                         limit=limit)
    return json_response({"data": rows})


routes = [
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/records", records, methods=["GET"]),
]
