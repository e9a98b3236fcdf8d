"""The HTTP routes: a thin layer over `core.Gateway`."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tiergate.errors import HeadersTooLarge, InvalidRequest, PayloadTooLarge, TiergateError
from tiergate.gateway.core import Gateway

MAX_HEADER_BYTES = 64 * 1024
"""Request headers larger than this in all are refused (431). The HTTP server (httptools) sets no limit of its own,
and X-Tiergate-Caller is captured as sent: without one, a header would carry what `max_body_bytes` refuses in a
body (a 100 MB caller name, stored), and a key of any size would be hashed."""


def _gw(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def check_headers(request: Request) -> None:
    """HeadersTooLarge when the request's headers (names and values) add up to more than MAX_HEADER_BYTES."""
    size = sum(len(k) + len(v) for k, v in request.scope["headers"])
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"The request headers are {size} bytes; this gateway accepts up to {MAX_HEADER_BYTES}.")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"The request body is {declared} bytes; this gateway accepts up to {limit}.")
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes, the most this gateway accepts.")
        chunks.append(chunk)
    return b"".join(chunks)


async def chat_completions(request: Request) -> Response:
    gw = _gw(request)
    try:
        check_headers(request)
        raw = await read_body(request, gw.config.server.max_body_bytes)
    except TiergateError as exc:
        return gw.refuse(exc)
    except ClientDisconnect:
        return Response(status_code=499)

    async def client_gone() -> None:  # the body is read: all the connection can still say is that it closed
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        return await gw.chat(raw, request.headers, client_gone)
    except TiergateError as exc:  # authentication: refused before a record exists
        return gw.refuse(exc)


async def list_models(request: Request) -> Response:
    gw = _gw(request)
    try:
        check_headers(request)
        await gw.keys.check(request.headers)
    except TiergateError as exc:
        return gw.refuse(exc)
    created = int(gw.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "tiergate",
             "tiergate": {"routes_to": target}} for name, target in sorted(gw.routing.model_map.items())]
    if not any(d["id"] == "auto" for d in data):
        data.insert(0, {"id": "auto", "object": "model", "created": created, "owned_by": "tiergate",
                        "tiergate": {"routes_to": "auto"}})
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def healthz(request: Request) -> Response:
    """Liveness and readiness: 503 while starting or stopping, and while the store cannot be reached when callers'
    keys are checked against it (every request would fail); without keys the gateway still answers and spills its
    records, so it reports `degraded` with a 200."""
    gw = _gw(request)
    tiers = {n: {"kind": t.kind, "zone": t.zone, "circuit": gw.breakers[n].state.value} for n, t in gw.tiers.items()}
    store = await _store_health(gw)
    status = "stopping" if gw.stopping else "starting" if not gw.ready else "ok" if store["ok"] else "degraded"
    body: dict[str, Any] = {
        "status": status, "uptime_s": round(time.time() - gw.started_at, 1), "tiers": tiers, "store": store,
        "writer": {"queue_depth": gw.writer.depth, "written": gw.writer.written, "spilled": gw.writer.spilled},
    }
    serving = gw.ready and not gw.stopping and (store["ok"] or not gw.config.auth.require_key)
    return JSONResponse(body, status_code=200 if serving else 503)


_STORE_CHECK_S = 2.0
"""A store check is reused this long (probes every second from several load balancers make one query)."""


async def _store_health(gw: Gateway) -> dict[str, Any]:
    import asyncio

    from sqlalchemy import text

    cached = gw.store_health
    if cached is not None and time.monotonic() - cached[0] < _STORE_CHECK_S:
        return cached[1]

    def probe() -> None:
        with gw.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        async with asyncio.timeout(_STORE_CHECK_S):
            await asyncio.to_thread(probe)
        result: dict[str, Any] = {"ok": True}
    except Exception as exc:  # noqa: BLE001  (any failure to reach it is the answer)
        result = {"ok": False, "error": type(exc).__name__}
    gw.store_health = (time.monotonic(), result)
    return result


async def metrics(request: Request) -> Response:
    return Response(_gw(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
