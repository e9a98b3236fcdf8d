"""The `upstream` tier: any OpenAI-compatible HTTP endpoint (a frontier API, vLLM, Ollama, another tiergate).

    tier = UpstreamTier("frontier", config.tiers["frontier"])
    await tier.start()                                   # the pooled HTTP client is made here, not at import
    result = await tier.complete(body)                   # TierResult(data, raw=exact bytes, usage tokens)
    async for chunk in tier.stream(body): ...            # StreamChunk per SSE event, then StreamChunk.done()

The caller's body goes upstream unchanged (tools, response_format, logprobs, seed, metadata, ...): only `model`
is replaced when the tier names one, and `stream` is set to match the method called. 429, 5xx gateway errors,
connection errors and timeouts are retried with full-jitter backoff (honouring Retry-After) within
`retry.max_attempts` and `timeout.total`; other 4xx answers are the caller's and come back as
UpstreamHTTPError with the upstream's own status and body. A stream retries only until its first event, so a
failure that the gateway can still hide (by falling back) is never half-sent.

The circuit breaker is not here: the gateway's dispatcher owns one `CircuitBreaker` per tier.

The HTTP client is aiohttp's: on this path it costs ~136 us of CPU per request against ~1,600 us for httpx
under 16 concurrent requests (benchmarks/upstream_clients.py), and the gateway's whole budget is under 1 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from tiergate.config import UpstreamTierConfig
from tiergate.errors import InvalidRequest, TiergateError, UpstreamError, UpstreamHTTPError, UpstreamTimeout
from tiergate.tiers.base import StreamChunk, Tier, TierResult
from tiergate.tiers.resilience import backoff_delay

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures after which the same request may well succeed: connection refused/reset/closed, socket timeouts,
# a body cut short.
_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)
_TIMEOUTS = (aiohttp.ServerTimeoutError, asyncio.TimeoutError)
# Upstream error headers worth passing on; never content-encoding/length (the body is already decoded).
_PASSED_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-request-id")


class _Retry(Exception):
    """One attempt failed in a way worth retrying: an HTTP status, or a transport error as `__cause__`."""

    def __init__(self, status: int | None = None, body: bytes = b"", headers: dict[str, str] | None = None,
                 retry_after: str | float | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers, self.retry_after = status, body, headers or {}, retry_after


class UpstreamTier(Tier):
    """An OpenAI-compatible HTTP endpoint behind one pooled, keep-alive aiohttp session."""

    kind: ClassVar[str] = "upstream"
    config: UpstreamTierConfig

    def __init__(self, name: str, config: UpstreamTierConfig) -> None:
        super().__init__(name, config)
        self._client: aiohttp.ClientSession | None = None
        self._url = f"{config.base_url}/chat/completions"
        self._headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"UpstreamTier(name={self.name!r}, model={self.config.model!r})"

    def model_names(self) -> list[str]:
        return [self.config.model] if self.config.model else []

    async def start(self) -> None:
        if self._client is not None:
            return
        cfg = self.config
        headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key is not None:
            headers["Authorization"] = "Bearer " + cfg.api_key.get_secret_value()
        t = cfg.timeout
        connector = aiohttp.TCPConnector(limit=cfg.max_connections, limit_per_host=cfg.max_connections,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        self._client = aiohttp.ClientSession(
            connector=connector,
            # per-socket timeouts: connect, and the longest wait for the next bytes (a stalled stream)
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
            # A jar that keeps nothing: upstream cookies must not leak from one caller's request to the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        self._headers = headers

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- the two answers ---------------------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> TierResult:
        payload = self._payload(body, stream=False)
        raw = await self._with_retries(lambda: self._attempt_whole(payload), self._deadline())
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"tier {self.name!r}: upstream answered with a body that is not JSON") from exc
        if type(data) is not dict:
            raise UpstreamError(f"tier {self.name!r}: upstream answered a JSON {type(data).__name__}, not an object")
        usage = data.get("usage")
        if type(usage) is not dict:
            usage = {}
        return TierResult(data=data, raw=raw, prompt_tokens=_count(usage.get("prompt_tokens")),
                          completion_tokens=_count(usage.get("completion_tokens")))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        opts = body.get("stream_options")
        # Ask for usage even when the caller did not: every streamed request is priced from the upstream's own
        # count. The extra usage chunk is marked forward=False and never reaches that caller.
        hide_usage = not (isinstance(opts, dict) and opts.get("include_usage"))
        if hide_usage:
            body = {**body, "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}}
        payload = self._payload(body, stream=True)
        deadline = self._deadline()
        resp, events, first = await self._with_retries(lambda: self._first_event(payload), deadline)
        sent = 0
        try:
            chunk = first
            while True:
                if hide_usage and chunk.data is not None and not chunk.data.get("choices") and chunk.data.get("usage"):
                    chunk = StreamChunk(chunk.data, chunk.raw, forward=False)
                yield chunk
                sent += 1
                if chunk.data is None:
                    return
                try:
                    if deadline is None:
                        chunk = await anext(events)
                    else:
                        async with asyncio.timeout_at(deadline):
                            chunk = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise UpstreamTimeout(f"tier {self.name!r}: stream passed timeout.total after "
                                          f"{sent} events") from exc
                except _TIMEOUTS as exc:
                    raise UpstreamTimeout(f"tier {self.name!r}: stream stalled after {sent} events "
                                          f"({type(exc).__name__})", detail=self._describe(exc)) from exc
                except aiohttp.ClientError as exc:
                    raise UpstreamError(f"tier {self.name!r}: stream broke after {sent} events "
                                        f"({type(exc).__name__})", detail=self._describe(exc)) from exc
        finally:
            await events.aclose()
            resp.release()

    # -- one attempt --------------------------------------------------------------------------------------

    def _payload(self, body: dict[str, Any], *, stream: bool) -> bytes:
        """The caller's body as JSON, changed only where the tier must: `model`, and `stream` to match."""
        model = self.config.model
        if (model is not None and body.get("model") != model) or bool(body.get("stream")) is not stream:
            body = dict(body)
            if model is not None:
                body["model"] = model
            if stream:
                body["stream"] = True
            elif body.get("stream"):  # a whole answer was asked for: stream_options is rejected without stream
                del body["stream"]
                body.pop("stream_options", None)
        try:
            return orjson.dumps(body)
        except TypeError as exc:
            raise InvalidRequest(f"request body cannot be sent upstream: {exc}") from exc

    async def _attempt(self, payload: bytes) -> aiohttp.ClientResponse:
        """One POST; returns a 2xx response with its body unread, or raises _Retry / a final error."""
        if self._client is None:
            await self.start()
        client = self._client
        assert client is not None
        try:
            resp = await client.post(self._url, data=payload, headers=self._headers, allow_redirects=False)
        except _RETRYABLE as exc:
            raise _Retry() from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"tier {self.name!r}: cannot call upstream ({type(exc).__name__})",
                                detail=self._describe(exc)) from exc
        status = resp.status
        if status < 300:
            return resp
        try:
            body = await resp.read()
        except _RETRYABLE as exc:
            raise _Retry(status) from exc
        finally:
            resp.release()
        rh = resp.headers
        headers = {k.lower(): v for k, v in rh.items() if k.lower() in _PASSED_HEADERS
                   or k.lower().startswith("x-ratelimit-")}
        if status in RETRY_STATUSES and rh.get("x-should-retry") != "false":
            raise _Retry(status, body, headers, _retry_after(rh))
        if status >= 500 or status < 400:
            raise UpstreamError(f"tier {self.name!r}: upstream answered HTTP {status}")
        raise UpstreamHTTPError(f"tier {self.name!r}: upstream answered HTTP {status}", status=status, body=body,
                                headers=headers)

    async def _attempt_whole(self, payload: bytes) -> bytes:
        resp = await self._attempt(payload)
        try:
            return await resp.read()
        except _RETRYABLE as exc:
            raise _Retry(resp.status) from exc
        finally:
            resp.release()

    async def _first_event(
        self, payload: bytes,
    ) -> tuple[aiohttp.ClientResponse, AsyncIterator[StreamChunk], StreamChunk]:
        """Open a stream and read its first event, so a failure up to there can still be retried."""
        resp = await self._attempt(payload)
        events = self._events(resp)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            resp.release()
            raise UpstreamError(f"tier {self.name!r}: upstream stream ended before its first event") from None
        except BaseException as exc:
            await events.aclose()
            resp.release()
            if isinstance(exc, _RETRYABLE):
                raise _Retry() from exc
            if isinstance(exc, aiohttp.ClientError):
                raise UpstreamError(f"tier {self.name!r}: stream broke ({type(exc).__name__})",
                                    detail=self._describe(exc)) from exc
            raise
        return resp, events, first

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[StreamChunk]:
        """Split the byte stream into SSE events; a clean end without [DONE] still ends with done()."""
        buf = b""
        pieces = resp.content.iter_any()
        async for piece in pieces:
            buf += piece
            if b"\r" in piece:
                buf = buf.replace(b"\r\n", b"\n")
            while (cut := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:cut], buf[cut + 2:]
                chunk = self._parse_event(event)
                if chunk is not None:
                    if chunk.data is None:
                        await _drain(pieces)
                    yield chunk
                    if chunk.data is None:
                        return
        chunk = self._parse_event(buf.strip()) if buf.strip() else None
        if chunk is not None and chunk.data is not None:
            yield chunk
        yield StreamChunk.done()

    def _parse_event(self, event: bytes) -> StreamChunk | None:
        if event.startswith(b"data: ") and b"\n" not in event:
            data = event[6:]
        else:  # several lines, or comments / `event:` / `id:` fields around the data
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if not lines:
                return None
            data = b"\n".join(lines)
        if data == b"[DONE]":
            return StreamChunk.done()
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"tier {self.name!r}: upstream sent a stream event that is not JSON") from exc
        if type(parsed) is not dict:
            raise UpstreamError(f"tier {self.name!r}: upstream sent a stream event that is not a JSON object")
        return StreamChunk(parsed, event + b"\n\n")

    # -- retries --------------------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        total = self.config.timeout.total
        return None if total is None else asyncio.get_running_loop().time() + total

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        if deadline is None:
            return await self._retry_loop(attempt, None)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._retry_loop(attempt, deadline)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"tier {self.name!r}: no answer within timeout.total "
                                  f"({self.config.timeout.total:g}s)") from exc

    async def _retry_loop(self, attempt: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        retry = self.config.retry
        loop = asyncio.get_running_loop()
        last_status: int | None = None
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except _Retry as failed:
                last_status = failed.status or last_status
                if tries >= retry.max_attempts:
                    raise self._exhausted(failed, tries, last_status) from failed.__cause__
                delay = backoff_delay(tries, retry.backoff_base_s, retry.backoff_max_s, failed.retry_after)
                if deadline is not None and loop.time() + delay >= deadline:
                    raise self._exhausted(failed, tries, last_status) from failed.__cause__
                await asyncio.sleep(delay)

    def _exhausted(self, failed: _Retry, tries: int, last_status: int | None) -> TiergateError:
        where = f"tier {self.name!r}: after {tries} attempt{'s' if tries > 1 else ''}"
        if failed.status == 429:
            return UpstreamHTTPError(f"{where}, upstream still rate-limits (HTTP 429)", status=429,
                                     body=failed.body, headers=failed.headers)
        if failed.status is not None:
            return UpstreamError(f"{where}, upstream answered HTTP {failed.status}")
        cause = failed.__cause__
        seen = f"; last upstream status {last_status}" if last_status else ""
        what = type(cause).__name__ if cause is not None else "unknown transport error"
        detail = self._describe(cause) if cause is not None else None
        if isinstance(cause, _TIMEOUTS):
            return UpstreamTimeout(f"{where}, upstream did not answer in time ({what}{seen})", detail=detail)
        return UpstreamError(f"{where}, upstream could not be reached ({what}{seen})", detail=detail)

    def _describe(self, exc: BaseException) -> str:
        """A client error in full, for logs and records only (it names the upstream's host and port, which callers
        are not told), with the api key scrubbed should it ever appear."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        return text.replace(key, "***") if key else text


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    """Read to the end of the body after [DONE] (normally just the last empty chunk, already buffered): a
    response closed before its end takes its keep-alive connection with it. An upstream that keeps the
    body open past [DONE] is not waited for; it only loses the connection."""
    try:
        async with asyncio.timeout(0.25):
            async for _ in pieces:
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _retry_after(headers: CIMultiDictProxy[str]) -> str | float | None:
    """OpenAI's `retry-after-ms` is finer than `retry-after`; prefer it when it parses."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    return headers.get("retry-after")


def _count(value: Any) -> int:
    return value if type(value) is int else 0
