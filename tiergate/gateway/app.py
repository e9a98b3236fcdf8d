"""The ASGI app.

    app = create_app(load_config("tiergate.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8080)

Starting opens the store (migrating it), starts the capture writer and loads the tiers; stopping closes the
tiers and drains the writer, so a graceful shutdown loses no record.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from tiergate.config import Config
from tiergate.errors import TiergateError
from tiergate.gateway import admin, api
from tiergate.gateway.core import Gateway
from tiergate.gateway.errors import http_error_handler, tiergate_error_handler, unhandled_error_handler
from tiergate.rollout import admin as rollout_admin
from tiergate.store.db import open_store


def create_app(config: Config, *, engine: Engine | None = None) -> Starlette:
    owns_engine = engine is None
    engine = engine or open_store(config.store.url)
    gateway = Gateway(config, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await gateway.start()
        except TiergateError as exc:  # a tier that cannot load: the server says why in one line (server.py)
            app.state.startup_error = exc
            raise
        try:
            yield
        finally:
            for part in ("monitor", "rollout"):
                observer = getattr(app.state, part, None)
                if observer is not None:
                    await observer.close()
            await gateway.close()
            if owns_engine:
                engine.dispose()

    app = Starlette(
        routes=[*api.routes, *admin.routes, *rollout_admin.routes],
        lifespan=lifespan,
        exception_handlers={
            TiergateError: tiergate_error_handler,
            HTTPException: http_error_handler,
            Exception: unhandled_error_handler,
        },
    )
    app.state.gateway = gateway
    app.state.config = config
    # rollout gates and drift/hallucination monitoring watch every record as gateway observers
    from tiergate.monitor.monitor import attach_monitor
    from tiergate.rollout.manager import attach

    attach(app)
    if config.monitor.enabled:
        attach_monitor(app, config.monitor)
    return app
