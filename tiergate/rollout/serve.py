"""One gateway process with the rollout manager, the monitor and their admin routes attached: what
`tiergate serve` runs once `create_app` wires them in (until then: tests, benchmarks and the demo use this).

    python -m tiergate.rollout.serve CONFIG.yaml [--port 0]     # prints "LISTENING <port>" when ready

`with_rollout(app)` attaches everything to an app made by `create_app` (idempotent: a no-op once wired).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any


def with_rollout(app: Any, monitor_config: Any = None) -> Any:
    """Attach the rollout manager, the monitor and the admin routes to a `create_app` app (idempotent)."""
    from tiergate.monitor.monitor import attach_monitor
    from tiergate.rollout import admin
    from tiergate.rollout.manager import attach

    attach(app)
    attach_monitor(app, monitor_config)
    have = {getattr(r, "path", None) for r in app.router.routes}
    if "/admin/rollouts" not in have:
        app.router.routes.extend(admin.routes)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--monitor", default=None, help="YAML of the monitor section (until Config has `monitor`)")
    args = p.parse_args(argv)

    import uvicorn
    import yaml

    from tiergate.config import load_config
    from tiergate.gateway.app import create_app
    from tiergate.monitor.config import MonitorConfig

    config = load_config(args.config)
    monitor = None
    if args.monitor:
        with open(args.monitor) as fh:
            monitor = MonitorConfig.model_validate(yaml.safe_load(fh) or {})
    app = with_rollout(create_app(config), monitor)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            manager = app.state.rollout
            await manager.start()
            print(f"LISTENING {sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
