"""The `upstream` tier: any OpenAI-compatible HTTP endpoint (a frontier API, vLLM, Ollama, another tiergate).

    tier = UpstreamTier("frontier", config.tiers["frontier"])
    await tier.start()                                   # the pooled httpx client is made here, not at import
    result = await tier.complete(body)                   # TierResult(data, raw=exact bytes, usage tokens)
    async for chunk in tier.stream(body): ...            # StreamChunk per SSE event, then StreamChunk.done()

The caller's body goes upstream unchanged (tools, response_format, logprobs, seed, metadata, ...): only `model`
is replaced when the tier names one, and `stream` is set to match the method called. 429, 5xx gateway errors,
connection errors and timeouts are retried with full-jitter backoff (honouring Retry-After) within
`retry.max_attempts` and `timeout.total`; other 4xx answers are the caller's and come back as
UpstreamHTTPError with the upstream's own status and body. A stream retries only until its first event, so a
failure that the gateway can still hide (by falling back) is never half-sent.

The circuit breaker is not here: the gateway's dispatcher owns one `CircuitBreaker` per tier.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import httpx
import orjson

from tiergate.config import UpstreamTierConfig
from tiergate.errors import InvalidRequest, TiergateError, UpstreamError, UpstreamHTTPError, UpstreamTimeout
from tiergate.tiers.base import StreamChunk, Tier, TierResult
from tiergate.tiers.resilience import backoff_delay

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures after which the same request may well succeed; PoolTimeout is absent: our own pool is full.
_RETRYABLE = (httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.NetworkError,
              httpx.RemoteProtocolError)
# Upstream error headers worth passing on; never content-encoding/length (the body is already decoded).
_PASSED_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-request-id")


class _Retry(Exception):
    """One attempt failed in a way worth retrying: an HTTP status, or a transport error as `__cause__`."""

    def __init__(self, status: int | None = None, body: bytes = b"", headers: dict[str, str] | None = None,
                 retry_after: str | float | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers, self.retry_after = status, body, headers or {}, retry_after


class UpstreamTier(Tier):
    """An OpenAI-compatible HTTP endpoint behind one pooled, keep-alive httpx client."""

    kind: ClassVar[str] = "upstream"
    config: UpstreamTierConfig

    def __init__(self, name: str, config: UpstreamTierConfig) -> None:
        super().__init__(name, config)
        self._client: httpx.AsyncClient | None = None
        self._url = f"{config.base_url}/chat/completions"

    def __repr__(self) -> str:
        return f"UpstreamTier(name={self.name!r}, model={self.config.model!r})"

    def model_names(self) -> list[str]:
        return [self.config.model] if self.config.model else []

    async def start(self) -> None:
        if self._client is not None:
            return
        cfg = self.config
        headers = httpx.Headers({"content-type": "application/json"})
        headers.update(cfg.headers)
        if cfg.api_key is not None:
            headers["authorization"] = "Bearer " + cfg.api_key.get_secret_value()
        t = cfg.timeout
        # A jar that refuses every cookie: upstream cookies must not leak from one caller's request to the next.
        jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.total or t.read),
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_keepalive),
            cookies=jar,
            follow_redirects=False,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- the two answers ---------------------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> TierResult:
        payload = self._payload(body, stream=False)
        resp = await self._with_retries(lambda: self._attempt(payload, stream=False), self._deadline())
        raw = resp.content
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"tier {self.name!r}: upstream answered HTTP {resp.status_code} with a body "
                                "that is not JSON") from exc
        if type(data) is not dict:
            raise UpstreamError(f"tier {self.name!r}: upstream answered a JSON {type(data).__name__}, not an object")
        usage = data.get("usage")
        if type(usage) is not dict:
            usage = {}
        return TierResult(data=data, raw=raw, prompt_tokens=_count(usage.get("prompt_tokens")),
                          completion_tokens=_count(usage.get("completion_tokens")))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        payload = self._payload(body, stream=True)
        deadline = self._deadline()
        resp, events, first = await self._with_retries(lambda: self._first_event(payload), deadline)
        sent = 0
        try:
            chunk = first
            while True:
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
                except httpx.TimeoutException as exc:
                    raise UpstreamTimeout(f"tier {self.name!r}: stream stalled after {sent} events "
                                          f"({self._describe(exc)})") from exc
                except httpx.HTTPError as exc:
                    raise UpstreamError(f"tier {self.name!r}: stream broke after {sent} events "
                                        f"({self._describe(exc)})") from exc
        finally:
            await events.aclose()
            await resp.aclose()

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
            else:  # a whole answer was asked for: stream_options would be rejected without stream
                body.pop("stream", None)
                body.pop("stream_options", None)
        try:
            return orjson.dumps(body)
        except TypeError as exc:
            raise InvalidRequest(f"request body cannot be sent upstream: {exc}") from exc

    async def _attempt(self, payload: bytes, *, stream: bool) -> httpx.Response:
        """One POST; returns a 2xx response (left open when streaming) or raises _Retry / a final error."""
        if self._client is None:
            await self.start()
        client = self._client
        assert client is not None
        try:
            if stream:
                resp = await client.send(client.build_request("POST", self._url, content=payload), stream=True)
            else:
                resp = await client.post(self._url, content=payload)
        except _RETRYABLE as exc:
            raise _Retry() from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"tier {self.name!r}: {self._describe(exc)}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"tier {self.name!r}: cannot call upstream ({self._describe(exc)})") from exc
        status = resp.status_code
        if status < 300:
            return resp
        try:
            body = await resp.aread() if stream else resp.content
        except httpx.HTTPError as exc:
            raise _Retry(status) from exc
        finally:
            if stream:
                await resp.aclose()
        headers = {k: v for k, v in resp.headers.items() if k in _PASSED_HEADERS or k.startswith("x-ratelimit-")}
        if status in RETRY_STATUSES and resp.headers.get("x-should-retry") != "false":
            raise _Retry(status, body, headers, _retry_after(resp.headers))
        if status >= 500 or status < 400:
            raise UpstreamError(f"tier {self.name!r}: upstream answered HTTP {status}")
        raise UpstreamHTTPError(f"tier {self.name!r}: upstream answered HTTP {status}", status=status, body=body,
                                headers=headers)

    async def _first_event(
        self, payload: bytes,
    ) -> tuple[httpx.Response, AsyncIterator[StreamChunk], StreamChunk]:
        """Open a stream and read its first event, so a failure up to there can still be retried."""
        resp = await self._attempt(payload, stream=True)
        events = self._events(resp)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            await resp.aclose()
            raise UpstreamError(f"tier {self.name!r}: upstream stream ended before its first event") from None
        except BaseException as exc:
            await events.aclose()
            await resp.aclose()
            if isinstance(exc, _RETRYABLE):
                raise _Retry() from exc
            if isinstance(exc, httpx.HTTPError):
                raise UpstreamError(f"tier {self.name!r}: stream broke ({self._describe(exc)})") from exc
            raise
        return resp, events, first

    async def _events(self, resp: httpx.Response) -> AsyncIterator[StreamChunk]:
        """Split the byte stream into SSE events; a clean end without [DONE] still ends with done()."""
        buf = b""
        async for piece in resp.aiter_bytes():
            buf += piece
            if b"\r" in piece:
                buf = buf.replace(b"\r\n", b"\n")
            while (cut := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:cut], buf[cut + 2:]
                chunk = self._parse_event(event)
                if chunk is not None:
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
        detail = self._describe(cause) if cause is not None else "unknown transport error"
        if isinstance(cause, httpx.TimeoutException):
            return UpstreamTimeout(f"{where}, upstream did not answer in time ({detail}{seen})")
        return UpstreamError(f"{where}, upstream could not be reached ({detail}{seen})")

    def _describe(self, exc: BaseException) -> str:
        """An httpx error as text for messages, with the api key scrubbed should it ever appear."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        return text.replace(key, "***") if key else text


def _retry_after(headers: httpx.Headers) -> str | float | None:
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
