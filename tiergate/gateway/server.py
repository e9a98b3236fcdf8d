"""Run the gateway under uvicorn with graceful shutdown (in-flight requests finish, captured records flush)."""

from __future__ import annotations

import logging

from tiergate.config import Config


def serve(config: Config, *, host: str | None = None, port: int | None = None, workers_note: bool = True) -> None:
    import uvicorn

    from tiergate.gateway.app import create_app

    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    uvicorn.run(
        app,
        host=host or config.server.host,
        port=port if port is not None else config.server.port,
        log_level=config.server.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(config.server.shutdown_grace_s) or None,
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )
