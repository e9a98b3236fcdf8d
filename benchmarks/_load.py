"""A small keep-alive HTTP/1.1 load generator (asyncio streams on uvloop), so that the client costs little
CPU beside the server it measures on a 2-core machine. Returns per-request latencies in seconds."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(host: str, port: int, payload: bytes, deadline: float, n_max: int, counter: list[int],
                  lat: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and counter[0] < n_max:
            counter[0] += 1
            t0 = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def run_load(url: str, body: bytes, headers: dict[str, str], *, concurrency: int, duration_s: float,
             max_requests: int = 10**9, warmup_s: float = 1.0) -> dict[str, object]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, port, payload = _request_bytes(url, body, headers)

    async def main() -> dict[str, object]:
        # warm-up: connections, caches, JIT-free but allocator-warm
        warm_lat: list[float] = []
        await asyncio.gather(*(_worker(host, port, payload, time.perf_counter() + warmup_s, 10**9, [0], warm_lat, {})
                               for _ in range(concurrency)))
        lat: list[float] = []
        statuses: dict[int, int] = {}
        counter = [0]
        t0 = time.perf_counter()
        await asyncio.gather(*(_worker(host, port, payload, t0 + duration_s, max_requests, counter, lat, statuses)
                               for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        return {"latencies": lat, "elapsed_s": elapsed, "statuses": statuses, "warmup_requests": len(warm_lat)}

    return asyncio.run(main())


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
