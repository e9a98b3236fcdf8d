"""Engines for the capture store: SQLite (WAL, busy timeout) by default, PostgreSQL by URL."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tiergate.errors import ConfigError
from tiergate.store.migrations import migrate


def normalize_url(url: str) -> str:
    """Accept the URL forms users paste: postgres:// and postgresql:// use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_store_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"store.url: not a database URL: {url!r}") from exc
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = os.path.dirname(os.path.abspath(db))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"store.url: cannot create the directory of {db} ({exc.strerror or exc})") from exc
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise ConfigError(f"store.url: cannot use {parsed.render_as_string(hide_password=True)}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def check_store_exists(url: str) -> None:
    """Refuse a SQLite store that does not exist yet: read-only commands (logs, keys list, exports) would
    otherwise create an empty one at a mistyped path and show nothing."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError as exc:
        raise ConfigError(f"store.url: not a database URL: {url!r}") from exc
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and db and db != ":memory:" and not os.path.isfile(db):
        raise ConfigError(f"no capture store at {db} (no such file); give the gateway's store with --db or "
                          "--config")


def migrate_store(engine: Engine) -> list[str]:
    """Bring the schema up to date; a database that cannot be opened or is not one is a ConfigError."""
    try:
        return migrate(engine)
    except SQLAlchemyError as exc:
        safe = engine.url.render_as_string(hide_password=True)
        engine.dispose()
        raise ConfigError(f"store.url: cannot open {safe}: {exc.__class__.__name__}: {exc.orig or exc}") from exc


def open_store(url: str, *, create: bool = True) -> Engine:
    """Create the engine and bring the schema up to date. `create=False`: a missing SQLite file is an error."""
    if not create:
        check_store_exists(url)
    engine = create_store_engine(url)
    migrate_store(engine)
    return engine
