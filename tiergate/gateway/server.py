"""Run the gateway under uvicorn with graceful shutdown (in-flight requests finish, captured records flush)."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from tiergate.config import Config


def gateway_server(app: Any, **options: Any) -> Any:
    """A uvicorn server for the gateway app that tells the gateway when shutdown begins, so requests still running
    when the grace (`timeout_graceful_shutdown`) is about to run out end with a 503 in OpenAI's shape and a record
    that says why (see `Gateway.begin_shutdown`)."""
    import uvicorn

    class GatewayServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app.state.gateway.begin_shutdown(float(self.config.timeout_graceful_shutdown or 0))
            await super().shutdown(sockets)

    return GatewayServer(uvicorn.Config(_one_line_startup_errors(app), **options))


def _one_line_startup_errors(app: Any) -> Any:
    """The app, but a startup that fails for a reason tiergate names (a tier's model that cannot load, say) is
    reported as that one line, not as the hundred-line traceback Starlette hands uvicorn to log."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)  # type: ignore[no-any-return]

        async def send_lifespan(message: dict[str, Any]) -> None:
            error = getattr(app.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error is not None:
                message = {**message, "message": f"cannot start: {error.message}"}
            await send(message)

        await app(scope, receive, send_lifespan)
        return None

    return wrapped


def serve(config: Config, *, host: str | None = None, port: int | None = None, workers_note: bool = True) -> None:
    from tiergate.gateway.app import create_app

    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not sys.stderr.isatty():  # a service's log is read by people and log shippers: no progress bars in it
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    app = create_app(config)
    server = gateway_server(
        app,
        host=host or config.server.host,
        port=port if port is not None else config.server.port,
        log_level=config.server.log_level,
        access_log=False,
        timeout_graceful_shutdown=config.server.shutdown_grace_s or None,  # seconds, fractions kept
        http="httptools",
        loop="uvloop",
        lifespan="on",
    )
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the app failed to start (the log says why)
