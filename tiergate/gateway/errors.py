"""The one place where errors become HTTP responses, always in OpenAI's error JSON shape."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tiergate.errors import TiergateError, UpstreamHTTPError

log = logging.getLogger("tiergate.gateway")

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(exc: TiergateError, headers: dict[str, str] | None = None) -> Response:
    if isinstance(exc, UpstreamHTTPError):
        body = exc.body
        try:
            parsed = orjson.loads(body)
            ok = isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:  # upstream spoke something else: wrap it in OpenAI's shape
            body = error_body(exc.message, "upstream_error", code=f"upstream_{exc.status}")
        hdrs = dict(headers or {})
        if "retry-after" in {k.lower() for k in exc.headers}:
            hdrs["Retry-After"] = next(v for k, v in exc.headers.items() if k.lower() == "retry-after")
        return Response(body, status_code=exc.status, media_type="application/json", headers=hdrs)
    return Response(orjson.dumps(exc.to_openai()), status_code=exc.status, media_type="application/json",
                    headers=headers)


async def tiergate_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TiergateError)
    return error_response(exc)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404:
        message = "Unknown route. The gateway serves /v1/chat/completions, /v1/models, /healthz and /metrics."
    return Response(error_body(message, _STATUS_TYPES.get(status, "server_error")), status_code=status,
                    media_type="application/json")


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        gateway.metrics.errors.labels("500").inc()
    return Response(error_body("The gateway hit an internal error; it has been logged.", "server_error"),
                    status_code=500, media_type="application/json")
