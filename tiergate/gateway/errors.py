"""The one place where errors become HTTP responses, always in OpenAI's error JSON shape."""

from __future__ import annotations

import logging
import re
import string
from urllib.parse import quote

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tiergate.errors import TiergateError, UpstreamHTTPError

log = logging.getLogger("tiergate.gateway")

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 431: "invalid_request_error"}


_UNSENDABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
"""What an HTTP/1.1 header value cannot carry (uvicorn refuses it, Starlette cannot encode it): control characters
(CR and LF among them, so no header can be injected) and anything beyond Latin-1."""
_QUOTE_SAFE = string.ascii_letters + string.digits + " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


def header_value(value: str) -> str:
    """`value` as a response header can carry it: unchanged when it can, percent-encoded (UTF-8) when it holds a
    control character or a character beyond Latin-1 (a caller-chosen workload name, say)."""
    return quote(value, safe=_QUOTE_SAFE) if _UNSENDABLE.search(value) else value


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(exc: TiergateError, headers: dict[str, str] | None = None) -> Response:
    """The error in OpenAI's shape. `headers` (the X-Tiergate-* ones, which may echo what the caller sent) are made
    sendable first: an error answer must never itself fail on its headers."""
    headers = {k: header_value(v) for k, v in headers.items()} if headers else None
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
            hdrs["Retry-After"] = header_value(next(v for k, v in exc.headers.items() if k.lower() == "retry-after"))
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
    return Response(error_body("The gateway hit an internal error; it has been logged.", "server_error",
                               code="internal_error"), status_code=500, media_type="application/json")
