"""Run a real gateway (uvicorn on a loopback port) inside a test process.

    with run_gateway(config) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
        ...
    # leaving the block shuts the server down gracefully: in-flight requests finish, records flush
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tiergate.config import Config, parse_config


@dataclass
class RunningGateway:
    url: str
    app: Any
    key: str | None

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway


@contextmanager
def run_gateway(config: Config | dict[str, Any], *, create_key: bool = True, startup_timeout: float = 300.0
                ) -> Iterator[RunningGateway]:
    from tiergate.gateway.app import create_app
    from tiergate.gateway.server import gateway_server
    from tiergate.store.keys import create_key as make_key

    cfg = config if isinstance(config, Config) else parse_config(config, "<test config>")
    app = create_app(cfg)
    key = None
    if create_key and cfg.auth.require_key:
        _, key = make_key(app.state.gateway.engine, f"test-{os.urandom(4).hex()}")  # names are unique
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = gateway_server(app, log_level="warning", lifespan="on", access_log=False,
                            timeout_graceful_shutdown=cfg.server.shutdown_grace_s or None)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="tiergate-test-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"gateway failed to start: {errors[0] if errors else 'exited'}")
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not start in time")
        time.sleep(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app, key)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
        app.state.gateway.engine.dispose()
