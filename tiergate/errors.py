"""One exception tree for tiergate.

    TiergateError                      shown to the user; `status` and `type` map it to an OpenAI error
    ├── ConfigError                    bad or missing configuration (names the key)
    ├── DataError                      bad dataset file (names the file and line)
    ├── InvalidRequest        400      malformed JSON, schema errors, unsupported fields on a local tier
    ├── AuthenticationError   401      missing or unknown gateway key / admin token
    ├── PermissionDenied      403      key valid but not allowed (admin endpoints)
    ├── NotFound              404      unknown model, record or route
    ├── PayloadTooLarge       413      body over the configured size
    ├── HeadersTooLarge       431      request headers over the gateway's limit
    ├── RateLimited           429      gateway overloaded
    ├── UpstreamError         502      a tier failed (connection error, 5xx after retries, circuit open)
    │   └── UpstreamHTTPError          the upstream answered an error: passed through with its own status
    ├── UpstreamTimeout       504      a tier did not answer in time
    ├── Unavailable           503      the gateway is shutting down (its grace ran out on this request)
    ├── ClientClosed          499      the caller went away before the answer (recorded, never sent)
    ├── InternalError         500      a bug: logged with its traceback, answered in OpenAI's shape
    └── PrivacyViolation      403      no on-prem tier could take a request that must stay on-prem

Third-party errors are translated into this tree where they cross the boundary (`raise X from exc`);
the gateway maps the tree to HTTP in one place (`tiergate.gateway.errors`).
"""

from __future__ import annotations

from typing import Any


class TiergateError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.detail = detail
        """What operators need and callers must not see (an upstream's address, say): for logs and records."""
        if code is not None:
            self.code = code

    @property
    def recorded(self) -> str:
        """The error as a capture record keeps it: the class, the message and the detail."""
        return f"{type(self).__name__}: {self.message}" + (f" ({self.detail})" if self.detail else "")

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ConfigError(TiergateError):
    status = 500
    type = "configuration_error"


class DataError(TiergateError):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class InvalidRequest(TiergateError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(TiergateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(TiergateError):
    status = 403
    type = "permission_error"


class NotFound(TiergateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(TiergateError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(TiergateError):
    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


class RateLimited(TiergateError):
    status = 429
    type = "rate_limit_error"


class UpstreamError(TiergateError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an error status; the gateway passes status and body through."""

    def __init__(self, message: str, *, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.headers = headers or {}


class UpstreamTimeout(TiergateError):
    status = 504
    type = "upstream_error"
    code = "gateway_timeout"


class Unavailable(TiergateError):
    status = 503
    type = "server_error"
    code = "unavailable"


class ClientClosed(TiergateError):
    """Not an answer anyone reads: the status the record and the metrics keep (nginx's 499)."""

    status = 499
    type = "client_closed"
    code = "client_closed"


class InternalError(TiergateError):
    status = 500
    type = "server_error"
    code = "internal_error"

    @classmethod
    def of(cls, exc: BaseException) -> InternalError:
        """What the caller is told of a bug (the exception's type; the rest goes to the log)."""
        return cls(f"The gateway hit an internal error ({type(exc).__name__}); it has been logged.")


class PrivacyViolation(TiergateError):
    status = 403
    type = "permission_error"
    code = "privacy_guard"
