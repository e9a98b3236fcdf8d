"""Gateway API keys. Only a sha256 of each secret is stored; the secret is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import Engine, insert, or_, select, update

from tiergate.errors import InvalidRequest, NotFound
from tiergate.store.schema import api_keys

KEY_PREFIX = "tg-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: Engine, name: Any, workloads: Any = None) -> tuple[str, str]:
    """Create a key; returns (key id, secret). The secret is not stored and cannot be shown again.

    `name` must be a non-empty string no active key has (keys are revoked by name too); `workloads`, when given,
    a non-empty list of workload names the key is limited to."""
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise InvalidRequest("A key needs a name: a non-empty string of at most 128 characters.", param="name")
    if workloads is not None and (not isinstance(workloads, list) or not workloads or not all(
            isinstance(w, str) and w for w in workloads)):
        raise InvalidRequest("'workloads' must be a non-empty list of workload names (or absent: all workloads).",
                             param="workloads")
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    key_id = "key_" + secrets.token_hex(6)
    with engine.begin() as conn:
        taken = conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)
                             .where(api_keys.c.revoked_at.is_(None))).first()
        if taken is not None:
            raise InvalidRequest(f"An active key is already named {name!r} ({taken.id}); pick another name or "
                                 "revoke that key first.", param="name")
        conn.execute(insert(api_keys).values(
            id=key_id, name=name, key_hash=hash_key(secret), prefix=secret[:8], created_at=time.time(),
            revoked_at=None, workloads=workloads,
        ))
    return key_id, secret


def list_keys(engine: Engine, include_revoked: bool = True) -> list[dict[str, Any]]:
    q = select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at,
               api_keys.c.revoked_at, api_keys.c.workloads).order_by(api_keys.c.created_at)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def revoke_key(engine: Engine, id_or_name: str) -> int:
    """Revoke by key id or name; returns how many keys were revoked."""
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name))
            .where(api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    if res.rowcount == 0:
        raise NotFound(f"no active key with id or name {id_or_name!r}")
    return int(res.rowcount)


def lookup_key(engine: Engine, secret: str) -> dict[str, Any] | None:
    """The active key row for a secret, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.workloads)
            .where(api_keys.c.key_hash == hash_key(secret))
            .where(api_keys.c.revoked_at.is_(None))
        ).first()
    return dict(row._mapping) if row else None
