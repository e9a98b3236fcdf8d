"""Gateway key checks with a short-lived cache (a revoked key stops working within `key_cache_s`)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tiergate.errors import AuthenticationError, PermissionDenied, Unavailable
from tiergate.store.keys import hash_key, lookup_key


def browser_secret(headers: Any, cookies: Any) -> str | None:
    """The admin token as a browser sends it: the password of HTTP Basic auth (any user name), or the
    `tiergate_admin` cookie the dashboard sets."""
    value = headers.get("authorization") or ""
    if value[:6].lower() == "basic ":
        import base64

        try:
            return base64.b64decode(value[6:].strip()).decode("utf-8").partition(":")[2] or None
        except ValueError:  # not base64 (binascii.Error; non-ASCII text is a bare ValueError), or not UTF-8
            return None
    return cookies.get(ADMIN_COOKIE) or None


ADMIN_COOKIE = "tiergate_admin"

log = logging.getLogger("tiergate.gateway")


def bearer(headers: Any) -> str | None:
    value = headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("x-api-key")


class KeyChecker:
    def __init__(self, engine: Engine, *, required: bool, cache_s: float, admin_token: str | None) -> None:
        self.engine = engine
        self.required = required
        self.cache_s = cache_s
        self.admin_token = admin_token
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def check(self, headers: Any) -> dict[str, Any] | None:
        """The key row for the request, None when keys are not required; AuthenticationError otherwise."""
        secret = bearer(headers)
        if not self.required:
            return None
        if not secret:
            raise AuthenticationError(
                "Missing gateway key: send 'Authorization: Bearer <key>' (create one with `tiergate keys create`)."
            )
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            row = hit[1]
        else:
            try:
                row = await asyncio.to_thread(lookup_key, self.engine, secret)
            except SQLAlchemyError as exc:  # the store is down: not a bug, and not the caller's fault either
                reason = str(getattr(exc, "orig", None) or exc).partition("\n")[0]
                log.warning("cannot check a gateway key, the store is unavailable: %s: %s", type(exc).__name__, reason)
                raise Unavailable("The gateway cannot check keys: its store is unavailable; retry shortly.",
                                  code="store_unavailable") from None
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_s, row)
        if row is None:
            raise AuthenticationError("Incorrect gateway key provided.")
        return row

    def check_admin(self, headers: Any, secret: str | None = None) -> None:
        """The admin token from `Authorization: Bearer` (or `secret`, where a browser sent it another way)."""
        if not self.admin_token:
            raise PermissionDenied("The admin API is disabled: set auth.admin_token or TIERGATE_ADMIN_TOKEN.")
        secret = secret or bearer(headers)
        if not secret or not hmac.compare_digest(secret.encode(), self.admin_token.encode()):
            raise AuthenticationError("Incorrect admin token.", code="invalid_admin_token")
