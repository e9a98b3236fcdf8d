"""The admin API under /admin, behind the admin token."""

from __future__ import annotations

import asyncio
import html
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tiergate.errors import InvalidRequest, TiergateError
from tiergate.gateway.auth import ADMIN_COOKIE, browser_secret
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
    if q.get("status") not in (None, "ok", "error"):
        raise InvalidRequest("'status' must be ok or error.", param="status")
    rows = query_records(gw.engine, workload=q.get("workload"), tier=q.get("tier"), status=q.get("status"),
                         limit=limit)
    return json_response({"data": rows})


@admin
async def dashboard_data(request: Request, gw: Gateway) -> Response:
    from tiergate.gateway.dashboard import collect

    return json_response(await asyncio.to_thread(collect, gw.engine, gw.config, since=_since(request)))


def _since(request: Request) -> float:
    from tiergate.costs.report import parse_since

    try:
        return parse_since(request.query_params.get("since", "24h"), option="'since'") or 0.0
    except TiergateError as exc:  # the reports' own reason (not a duration or date; in the future)
        raise InvalidRequest(exc.message, param="since") from None


async def dashboard(request: Request) -> Response:
    """The dashboard page for a browser: the admin token as HTTP Basic password (the browser asks for it), the
    cookie set here, or `?token=` once (exchanged for the cookie, so the token leaves the address bar)."""
    from tiergate.gateway.dashboard import collect, render

    gw: Gateway = request.app.state.gateway
    token = request.query_params.get("token")
    try:
        if token is not None:
            gw.keys.check_admin(request.headers, token)
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            redirect = RedirectResponse("/dashboard" + (f"?{rest}" if rest else ""), status_code=303)
            redirect.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", path="/dashboard",
                                secure=_https(request))
            redirect.headers.update(PAGE_HEADERS)
            return redirect
        gw.keys.check_admin(request.headers, browser_secret(request.headers, request.cookies))
        data = await asyncio.to_thread(collect, gw.engine, gw.config, since=_since(request))
    except TiergateError as exc:
        page = f"<!doctype html><title>tiergate</title><p>{html.escape(exc.message)}</p>"
        headers = {"WWW-Authenticate": 'Basic realm="tiergate admin"'} if exc.status == 401 else None
        return HTMLResponse(page, status_code=exc.status, headers={**PAGE_HEADERS, **(headers or {})})
    return HTMLResponse(render(data, refresh_s=gw.config.server.dashboard_refresh_s or None, ranges=True),
                        headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Cache-Control": "no-store",  # spend and failures of the company's traffic: not for shared caches or history
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",  # the page has inline CSS and nothing else
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""Headers of the dashboard page: it holds no script, loads nothing, and must not be framed or cached."""


def _https(request: Request) -> bool:
    """Whether the browser reached the gateway over HTTPS (directly, or through a proxy that says so)."""
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or proto == "https"


routes = [
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/admin/dashboard", dashboard_data, methods=["GET"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/records", records, methods=["GET"]),
]
