"""Why the upstream tier uses aiohttp: client CPU per request and requests/s against the local stub upstream,
16 concurrent requests, for httpx, httpx over an aiohttp transport, and aiohttp.

    .venv/bin/python benchmarks/upstream_clients.py [--requests 4000] [--out benchmarks/results/upstream_clients.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

from tiergate.testing.stub_process import start_stub

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello world this is a test"}]})


async def _bench(name: str, client, call, n: int, c: int) -> dict:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(c)

    async def one() -> None:
        async with sem:
            await call(client)

    for _ in range(200):
        await one()
    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    el, cp = time.perf_counter() - t, time.process_time() - cpu
    row = {"client": name, "rps": n / el, "cpu_us_per_request": cp / n * 1e6}
    print(f"{name:16s} {row['rps']:7.0f} req/s  {row['cpu_us_per_request']:6.0f} us CPU/request", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/upstream_clients.json")
    args = ap.parse_args()
    rows = []
    with start_stub() as stub:
        url = stub.base_url + "/chat/completions"
        hdr = {"content-type": "application/json"}

        async def call_httpx(c: httpx.AsyncClient) -> None:
            orjson.loads((await c.post(url, content=BODY, headers=hdr)).content)

        async def call_aiohttp(s: aiohttp.ClientSession) -> None:
            async with s.post(url, data=BODY, headers=hdr) as r:
                orjson.loads(await r.read())

        async def run() -> None:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
            async with httpx.AsyncClient(limits=limits) as c:
                rows.append(await _bench("httpx", c, call_httpx, args.requests, args.concurrency))
            try:
                from httpx_aiohttp import AiohttpTransport

                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s, \
                        httpx.AsyncClient(transport=AiohttpTransport(client=s)) as c:
                    rows.append(await _bench("httpx+aiohttp", c, call_httpx, args.requests, args.concurrency))
            except ImportError:
                pass
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
                rows.append(await _bench("aiohttp", s, call_aiohttp, args.requests, args.concurrency))

        asyncio.run(run())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "upstream_clients", "concurrency": args.concurrency,
                                          "requests": args.requests, "results": rows}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
