"""Gateway key checks with a short-lived cache (a revoked key stops working within `key_cache_s`)."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from sqlalchemy import Engine

from tiergate.errors import AuthenticationError, PermissionDenied
from tiergate.store.keys import hash_key, lookup_key


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
            row = await asyncio.to_thread(lookup_key, self.engine, secret)
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_s, row)
        if row is None:
            raise AuthenticationError("Incorrect gateway key provided.")
        return row

    def check_admin(self, headers: Any) -> None:
        if not self.admin_token:
            raise PermissionDenied("The admin API is disabled: set auth.admin_token or TIERGATE_ADMIN_TOKEN.")
        secret = bearer(headers)
        if not secret or not hmac.compare_digest(secret.encode(), self.admin_token.encode()):
            raise AuthenticationError("Incorrect admin token.", code="invalid_admin_token")
