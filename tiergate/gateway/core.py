"""The request path: route, dispatch with circuit breakers and fallback, account, capture.

    gw = Gateway(config, engine)
    await gw.start()
    response = await gw.chat(raw_body, headers)      # a Starlette Response, success or OpenAI-shaped error
    await gw.close()                                  # closes tiers, drains the capture writer

Every request that passes authentication becomes one record, whatever happens to it (errors included).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine
from starlette.responses import Response, StreamingResponse

from tiergate.config import Config
from tiergate.errors import (
    ClientClosed,
    InternalError,
    InvalidRequest,
    PermissionDenied,
    PrivacyViolation,
    RateLimited,
    TiergateError,
    Unavailable,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
)
from tiergate.gateway.auth import KeyChecker
from tiergate.gateway.errors import error_response, header_value
from tiergate.gateway.metrics import Metrics
from tiergate.gateway.validate import parse_body, validate_chat_request
from tiergate.routing.base import RouteDecision, RouteRequest
from tiergate.routing.policy import Routing
from tiergate.store.writer import RecordWriter
from tiergate.tiers.base import StreamChunk, Tier, TierResult
from tiergate.tiers.registry import build_tier
from tiergate.tiers.resilience import CircuitBreaker

log = logging.getLogger("tiergate.gateway")

WORKLOAD_HEADER = "x-tiergate-workload"
STICKY_HEADER = "x-tiergate-sticky-key"


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass
class Dispatched:
    tier: str
    reason: str
    fell_back_from: list[str]


T = TypeVar("T")


class Flight:
    """One request in flight, which the gateway can end early with an error: its client went away, or the
    server's shutdown grace is about to run out. `await flight.run(aw)` awaits under an asyncio timeout with no
    deadline; `abort(error)` makes that await expire at once (and any later one at its start) and raise `error`.
    Only the awaits inside `run` are cut, so a stream is never cancelled while a chunk is being sent."""

    __slots__ = ("error", "_cm", "streaming", "body", "shadow")

    def __init__(self) -> None:
        self.error: TiergateError | None = None
        self._cm: asyncio.Timeout | None = None
        self.streaming = False
        """the response is a stream: its relay records the request, not `chat`"""
        self.body: dict[str, Any] | None = None
        self.shadow: str | None = None

    def abort(self, error: TiergateError) -> None:
        if self.error is None:
            self.error = error
            if self._cm is not None:
                self._cm.reschedule(asyncio.get_running_loop().time())

    async def run(self, aw: Awaitable[T]) -> T:
        if self.error is not None:
            getattr(aw, "close", lambda: None)()  # a coroutine that will not run
            raise self.error
        cm = asyncio.timeout(None)
        try:
            async with cm:
                self._cm = cm
                return await aw
        except TimeoutError:
            if self.error is not None and cm.expired():
                raise self.error from None
            raise
        finally:
            self._cm = None


class Gateway:
    def __init__(self, config: Config, engine: Engine, *, tiers: dict[str, Tier] | None = None) -> None:
        self.config = config
        self.engine = engine
        # the workloads the configuration names keep their own metrics label however many others callers make up
        self.metrics = Metrics({*config.workloads, config.routing.default_workload, *config.monitor.workloads})
        self.tiers: dict[str, Tier] = tiers or {n: build_tier(n, c) for n, c in config.tiers.items()}
        self.breakers = {
            n: CircuitBreaker.from_config(c.breaker, name=n) for n, c in config.tiers.items()
        }
        self.pricers = _build_pricers(config)
        extra_models = {m: n for n, t in self.tiers.items() for m in t.model_names()}
        self.routing = Routing.from_config(config, extra_models=extra_models)
        s = config.store
        self.writer = RecordWriter(
            engine, queue_size=s.queue_size, batch_size=s.batch_size, flush_interval_s=s.flush_interval_ms / 1000,
            spill_path=s.spill_path, on_written=self.metrics.records_written.inc,
        )
        self.metrics.bind_writer(lambda: self.writer.depth, lambda: self.writer.spilled)
        token = config.auth.admin_token.get_secret_value() if config.auth.admin_token else None
        self.keys = KeyChecker(engine, required=config.auth.require_key, cache_s=config.auth.key_cache_s,
                               admin_token=token)
        self.inflight = 0
        self.started_at = time.time()
        self.store_health: tuple[float, dict[str, Any]] | None = None
        """The last store check of /healthz: (monotonic time, result)."""
        self.ready = False
        # Observers see every record: `on_record(rec)` for answers, `on_shadow(primary, shadow)` for shadow pairs
        # (called before the shadow record is stored, so they may annotate it). Rollout gates and monitors.
        self.observers: list[Any] = []
        self._shadow_slots = asyncio.Semaphore(config.server.max_shadow_inflight)
        self._background: set[asyncio.Task[None]] = set()
        self._flights: set[Flight] = set()
        self.stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.writer.start()
        await asyncio.gather(*(t.start() for t in self.tiers.values()))
        await asyncio.gather(*(r.start() for r in self.routing.routers()))
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self._background:  # shadow calls in flight finish (and are recorded) before the writer drains
            await asyncio.wait(set(self._background), timeout=self.config.server.shutdown_grace_s or None)
        results = await asyncio.gather(*(t.close() for t in self.tiers.values()), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.warning("closing a tier failed: %s", r)
        await self.writer.close()

    def begin_shutdown(self, grace_s: float) -> None:
        """The server has stopped taking connections and gives the requests in flight `grace_s` seconds. A little
        before that runs out, the ones still running are ended here: a 503 in OpenAI's shape (an error event for a
        stream) and a record that says the gateway shut down, where uvicorn would cancel them with a plain-text
        500, or a cut stream, and a record with no reason."""
        self.stopping = True
        if grace_s > 0:
            asyncio.get_running_loop().call_later(
                grace_s - min(2.0, grace_s / 4), self.abort_all,
                lambda: Unavailable("The gateway is shutting down; retry the request.", code="shutting_down"))

    def abort_all(self, error: Callable[[], TiergateError]) -> None:
        for flight in list(self._flights):
            flight.abort(error())

    # -- the request path --------------------------------------------------------------------------------------
    async def chat(self, raw: bytes, headers: Any,
                   client_gone: Callable[[], Awaitable[Any]] | None = None) -> Response:
        """One request, answered and recorded whatever happens. `client_gone` returns when the caller disconnects:
        the work is then cancelled (a local model stops generating) and recorded as 499."""
        t0 = time.perf_counter()
        key = await self.keys.check(headers)  # unauthenticated requests are refused, not captured
        rec: dict[str, Any] = {
            "request_id": "req_" + os.urandom(12).hex(), "created_at": time.time(),
            "workload": self.config.routing.default_workload, "status": "error", "role": "primary",
            "api_key_id": key["id"] if key else None, "stream": False,
        }
        self.inflight += 1
        self.metrics.inflight.inc()
        flight = Flight()
        self._flights.add(flight)
        watcher = None
        if client_gone is not None:
            watcher = asyncio.ensure_future(client_gone())
            watcher.add_done_callback(lambda t: t.cancelled() or t.exception() is not None or flight.abort(
                ClientClosed("The client closed the connection before the answer.")))
        try:
            return await flight.run(self._handle(raw, headers, key, rec, flight, t0))
        except TiergateError as exc:
            self._fail(rec, exc, t0)
            return error_response(exc, self._headers(rec))
        except asyncio.CancelledError:  # the server stopped the request without the gateway's own abort
            self._fail(rec, ClientClosed("The request was cancelled before its answer."), t0)
            raise
        except Exception as exc:
            log.exception("request %s failed", rec["request_id"])
            err = InternalError.of(exc)
            self._fail(rec, err, t0)
            return error_response(err, self._headers(rec))
        finally:
            if watcher is not None:
                watcher.cancel()  # a stream listens for its own disconnect
            if not flight.streaming:
                self._flights.discard(flight)
                self._done()
                await asyncio.shield(self._record(rec))  # kept even when this task is being cancelled
                if flight.shadow and rec["status"] == "ok" and flight.body is not None:
                    self._spawn_shadow(flight.body, flight.shadow, rec)

    async def _handle(self, raw: bytes, headers: Any, key: dict[str, Any] | None, rec: dict[str, Any],
                      flight: Flight, t0: float) -> Response:
        if self.inflight > self.config.server.max_inflight:
            raise RateLimited("The gateway is at its in-flight limit; retry shortly.", code="overloaded")
        body = parse_body(raw)
        rec["model"] = body.get("model") if isinstance(body.get("model"), str) else None
        workload = self._workload(body, headers)  # first: a request refused for its shape counts on its workload
        rec["workload"] = workload
        validate_chat_request(body)
        self._capture_request(rec, body, headers)
        allowed = key.get("workloads") if key else None
        if allowed and (workload not in allowed if isinstance(allowed, list) else workload != allowed):
            raise PermissionDenied(f"This key may not use workload {workload!r}.", param="workload")
        td = time.perf_counter()
        req = RouteRequest(body, workload, self._sticky(body, headers))
        decision = await self.routing.route(req)
        self.metrics.decision.labels(workload).observe(time.perf_counter() - td)
        rec.update(tier=decision.tier, route_reason=decision.reason, route_score=decision.score)
        if decision.tier not in self.tiers:
            raise InvalidRequest(f"route chose unknown tier {decision.tier!r}")
        self.tiers[decision.tier].check_request(body)
        flight.body, flight.shadow = body, decision.shadow
        stream = bool(body.get("stream"))
        rec["stream"] = stream
        if decision.reviewer is not None:
            result, d = await self._cascade(req, body, decision, rec)
            if stream:
                response = self._stream_result(result, d, decision, rec, t0, body, flight)
                flight.streaming = True  # from here the relay records the request when the stream ends
                return response
            return self._respond(result, d, decision, rec, t0)
        if stream:
            response = await self._stream(body, decision, rec, t0, flight)
            flight.streaming = True
            return response
        result, d = await self._complete(body, decision)
        return self._respond(result, d, decision, rec, t0)

    async def _record(self, rec: dict[str, Any]) -> None:
        await self.writer.put(rec)
        for obs in self.observers:
            hook = getattr(obs, "on_record", None)
            if hook is not None:
                try:
                    hook(rec)
                except Exception:  # an observer must never break the request path
                    log.exception("observer %r failed on a record", obs)

    # -- cascades and shadows -------------------------------------------------------------------------------
    async def _cascade(self, req: RouteRequest, body: dict[str, Any], decision: RouteDecision,
                       rec: dict[str, Any]) -> tuple[TierResult, Dispatched]:
        """The small tier answers first; its reviewer keeps the answer or escalates. Both answers are kept: the
        first as a `cascade_first` record (its cost counted on its tier), and in the final record's response."""
        plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        t1 = time.perf_counter()
        first, d1 = await self._complete(plain, decision)
        assert decision.reviewer is not None
        escalate = await decision.reviewer.review(req, first)
        if escalate is None:
            return first, Dispatched(d1.tier, "cascade:kept" if d1.reason == decision.reason else d1.reason,
                                     d1.fell_back_from)
        first_rec = {
            "request_id": "req_" + os.urandom(12).hex(), "created_at": rec["created_at"],
            "workload": rec["workload"], "model": rec.get("model"), "role": "cascade_first",
            "parent_request_id": rec["request_id"], "tier": d1.tier, "route_reason": decision.reason,
            "route_score": escalate.score, "status": "ok", "http_status": 200, "stream": False,
            "messages": rec.get("messages"), "params": rec.get("params"), "answer": first.content,
            "response": {"confidence": first.confidence, **(first.extra or {})},
            "latency_ms": (time.perf_counter() - t1) * 1000, "api_key_id": rec.get("api_key_id"),
            "caller": rec.get("caller"),
        }
        self._account(first_rec, d1.tier, first.prompt_tokens, first.completion_tokens)
        await self._record(first_rec)
        rec["_cascade"] = {"first_tier": d1.tier, "first_answer": first.content, "confidence": first.confidence,
                           "score": escalate.score, "first_request_id": first_rec["request_id"],
                           **({"why": escalate.detail["why"]} if escalate.detail and "why" in escalate.detail else {})}
        # from here the request is the escalation's: a failure is the escalation tier's, and says so
        rec.update(tier=escalate.tier, route_reason=escalate.reason, route_score=escalate.score)
        final, d2 = await self._complete(plain, escalate)
        reason = escalate.reason if d2.reason == escalate.reason else d2.reason
        return final, Dispatched(d2.tier, reason, d2.fell_back_from)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task (a shadow call, a rollout transition) alive until done; close() waits for it."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _spawn_shadow(self, body: dict[str, Any], tier: str, primary: dict[str, Any]) -> None:
        """Send the request to `tier` after the caller has its answer; skipped (and counted) when the shadow
        slots are full, so shadows never queue up behind live traffic."""
        if tier not in self.tiers:
            return
        if self._shadow_slots.locked():
            self.metrics.shadow_skipped.labels(primary["workload"], tier).inc()
            return
        self.track(asyncio.create_task(self._shadow(body, tier, primary)))

    async def _shadow(self, body: dict[str, Any], tier_name: str, primary: dict[str, Any]) -> None:
        async with self._shadow_slots:
            plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            rec: dict[str, Any] = {
                "request_id": "req_" + os.urandom(12).hex(), "created_at": time.time(), "workload": primary["workload"],
                "model": primary.get("model"), "role": "shadow", "parent_request_id": primary["request_id"],
                "tier": tier_name, "route_reason": "shadow", "status": "error", "stream": False,
                "messages": primary.get("messages"), "params": primary.get("params"),
                "api_key_id": primary.get("api_key_id"), "caller": primary.get("caller"),
            }
            t0 = time.perf_counter()
            try:
                tier = self.tiers[tier_name]
                tier.check_request(plain)
                result = await tier.complete(plain)
            except TiergateError as exc:
                rec.update(http_status=exc.status, error=exc.recorded[:2000])
            except Exception as exc:  # a shadow must never take the gateway down
                log.exception("shadow call to %s failed", tier_name)
                rec.update(http_status=500, error=f"{type(exc).__name__}: {exc}"[:2000])
            else:
                rec.update(status="ok", http_status=200, answer=result.content,
                           response={"confidence": result.confidence, **(result.extra or {})})
                self._account(rec, tier_name, result.prompt_tokens, result.completion_tokens)
            rec["latency_ms"] = (time.perf_counter() - t0) * 1000
            for obs in self.observers:
                hook = getattr(obs, "on_shadow", None)
                if hook is not None:
                    try:
                        hook(primary, rec)
                    except Exception:
                        log.exception("observer %r failed on a shadow pair", obs)
            await self.writer.put(rec)

    def _done(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.dec()

    def _workload(self, body: dict[str, Any], headers: Any) -> str:
        wl = headers.get(WORKLOAD_HEADER)
        if wl:  # header bytes arrive as Latin-1: a UTF-8 name ("支払い") is read as what the caller wrote
            try:
                wl = wl.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
        if not wl:
            md = body.get("metadata")
            if isinstance(md, dict):
                wl = md.get("workload")
        if wl is None:
            return self.config.routing.default_workload
        if not isinstance(wl, str) or not wl or len(wl) > 128:
            raise InvalidRequest("The workload must be a string of 1 to 128 characters.", param="metadata.workload")
        return wl

    @staticmethod
    def _sticky(body: dict[str, Any], headers: Any) -> str | None:
        user = body.get("user")
        return headers.get(STICKY_HEADER) or (user if isinstance(user, str) else None)

    def _capture_request(self, rec: dict[str, Any], body: dict[str, Any], headers: Any) -> None:
        if self.config.store.capture_messages:
            rec["messages"] = body.get("messages")
        rec["params"] = {k: v for k, v in body.items() if k != "messages"}
        user = body.get("user")
        rec["caller"] = headers.get("x-tiergate-caller") or (user if isinstance(user, str) else None)

    def _chain(self, decision: RouteDecision) -> list[str]:
        """The decided tier and its fallbacks, in order; on-prem only when the decision says so."""
        chain: list[str] = []
        name: str | None = decision.tier
        while name is not None and name not in chain:
            chain.append(name)
            name = self.config.tiers[name].fallback
        if decision.on_prem_only:
            chain = [n for n in chain if self.tiers[n].zone == "on_prem"]
            if not chain:
                raise PrivacyViolation("This request must stay on-prem and no on-prem tier can take it.")
        return chain

    async def _complete(self, body: dict[str, Any], decision: RouteDecision) -> tuple[TierResult, Dispatched]:
        failed: list[str] = []
        last: TiergateError | None = None
        for name in self._chain(decision):
            breaker = self.breakers[name]
            if not breaker.allow():
                failed.append(name)
                last = last or UpstreamError(f"Tier {name!r} is unavailable (circuit open).", code="circuit_open")
                continue
            tier = self.tiers[name]
            if failed:
                try:
                    tier.check_request(body)
                except InvalidRequest:
                    continue
            try:
                result = await tier.complete(body)
            except (UpstreamError, UpstreamTimeout) as exc:
                if isinstance(exc, UpstreamHTTPError) and exc.status != 429:
                    breaker.record_success()  # the tier is up; the request was refused
                    raise
                breaker.record_failure()
                self.metrics.tier_failures.labels(name, type(exc).__name__).inc()
                self.metrics.breaker_open.labels(name).set(1 if breaker.state.value == "open" else 0)
                failed.append(name)
                last = exc
                continue
            breaker.record_success()
            if failed:
                self.metrics.fallbacks.labels(failed[0], name).inc()
            return result, Dispatched(name, "fallback" if failed else decision.reason, failed)
        assert last is not None
        raise last

    def _headers(self, rec: dict[str, Any]) -> dict[str, str]:
        h = {"X-Tiergate-Request-Id": rec["request_id"], "X-Tiergate-Workload": header_value(rec["workload"])}
        if rec.get("tier"):
            h["X-Tiergate-Tier"] = rec["tier"]
            h["X-Tiergate-Route-Reason"] = rec.get("route_reason") or ""
        if rec.get("cost_usd") is not None:
            h["X-Tiergate-Cost-USD"] = f"{rec['cost_usd']:.8f}"
        elif rec.get("status") == "ok":
            h["X-Tiergate-Cost-USD"] = "unknown"
        return h

    def _account(self, rec: dict[str, Any], tier: str, prompt_tokens: int, completion_tokens: int) -> None:
        pricer = self.pricers[tier]
        cost = pricer.cost(prompt_tokens, completion_tokens)
        # an unpriced tier is reported as unknown (NULL), never as a silent partial or zero cost
        rec.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   cost_usd=None if pricer.unknown else cost)
        wl = rec["workload"]
        self.metrics.tokens.labels(wl, tier, "prompt").inc(prompt_tokens)
        self.metrics.tokens.labels(wl, tier, "completion").inc(completion_tokens)
        if not pricer.unknown:
            self.metrics.cost.labels(wl, tier, rec["role"]).inc(cost)

    def _respond(self, result: TierResult, d: Dispatched, decision: RouteDecision, rec: dict[str, Any],
                 t0: float) -> Response:
        rec.update(tier=d.tier, route_reason=d.reason, answer=result.content)
        extra: dict[str, Any] = {}
        if result.confidence is not None:
            extra["confidence"] = result.confidence
        if result.extra:
            extra.update(result.extra)
        if "_cascade" in rec:
            extra["cascade"] = rec.pop("_cascade")
        try:
            extra["finish_reason"] = result.data["choices"][0].get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        self._answered(rec, d, decision, extra, result.prompt_tokens, result.completion_tokens, t0)
        headers = self._headers(rec)
        if result.confidence is not None:
            headers["X-Tiergate-Confidence"] = f"{result.confidence:.6f}"
        return Response(result.body_bytes(), media_type="application/json", headers=headers)

    def _answered(self, rec: dict[str, Any], d: Dispatched, decision: RouteDecision, extra: dict[str, Any],
                  prompt_tokens: int, completion_tokens: int, t0: float) -> None:
        """Record a request as answered by `d.tier` (an answer or a finished stream): its response extras with how
        it was routed, its tokens and cost, its latency, and the metrics."""
        if d.fell_back_from:
            extra["fallback_from"] = d.fell_back_from
            extra["decided"] = {"tier": decision.tier, "reason": decision.reason}
        if decision.detail and d.reason == decision.reason:
            extra["route"] = decision.detail  # what the router saw (privacy: the kinds found, never the values)
        rec.update(status="ok", http_status=200, response=extra or None)
        self._account(rec, d.tier, prompt_tokens, completion_tokens)
        latency = time.perf_counter() - t0
        rec["latency_ms"] = latency * 1000
        self.metrics.latency.labels(rec["workload"], d.tier).observe(latency)
        self.metrics.requests.labels(rec["workload"], d.tier, "ok").inc()
        self.metrics.route_reasons.labels(rec["workload"], d.tier, d.reason).inc()

    def refuse(self, exc: TiergateError) -> Response:
        """An error answered before a record exists (authentication, an oversized body): counted all the same."""
        self.metrics.errors.labels(str(exc.status)).inc()
        return error_response(exc)

    def _fail(self, rec: dict[str, Any], exc: TiergateError, t0: float) -> None:
        if "_cascade" in rec:  # the escalation failed: the small tier's answer stays in the record
            rec["response"] = {**(rec.get("response") or {}), "cascade": rec.pop("_cascade")}
        rec.update(status="error", http_status=exc.status, error=exc.recorded[:2000])
        rec["latency_ms"] = (time.perf_counter() - t0) * 1000
        self.metrics.errors.labels(str(exc.status)).inc()
        self.metrics.requests.labels(rec["workload"], rec.get("tier") or "", "error").inc()

    # -- streaming ---------------------------------------------------------------------------------------------
    async def _open_stream(self, body: dict[str, Any], decision: RouteDecision
                           ) -> tuple[StreamChunk, AsyncIterator[StreamChunk], Dispatched]:
        failed: list[str] = []
        last: TiergateError | None = None
        for name in self._chain(decision):
            breaker = self.breakers[name]
            if not breaker.allow():
                failed.append(name)
                last = last or UpstreamError(f"Tier {name!r} is unavailable (circuit open).", code="circuit_open")
                continue
            agen = self.tiers[name].stream(body)
            try:
                first = await agen.__anext__()
            except StopAsyncIteration:
                failed.append(name)
                last = UpstreamError(f"Tier {name!r} sent an empty stream.")
                breaker.record_failure()
                continue
            except (UpstreamError, UpstreamTimeout) as exc:
                if isinstance(exc, UpstreamHTTPError) and exc.status != 429:
                    breaker.record_success()
                    raise
                breaker.record_failure()
                self.metrics.tier_failures.labels(name, type(exc).__name__).inc()
                failed.append(name)
                last = exc
                continue
            breaker.record_success()
            if failed:
                self.metrics.fallbacks.labels(failed[0], name).inc()
            return first, agen, Dispatched(name, "fallback" if failed else decision.reason, failed)
        assert last is not None
        raise last

    async def _stream(self, body: dict[str, Any], decision: RouteDecision, rec: dict[str, Any],
                      t0: float, flight: Flight) -> Response:
        first, agen, d = await self._open_stream(body, decision)
        rec.update(tier=d.tier, route_reason=d.reason)
        headers = self._headers(rec)
        return StreamingResponse(self._relay(first, agen, d, decision, rec, t0, body, flight),
                                 media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _relay(self, first: StreamChunk, agen: AsyncIterator[StreamChunk], d: Dispatched,
                     decision: RouteDecision, rec: dict[str, Any], t0: float, body: dict[str, Any],
                     flight: Flight, cascade: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish: str | None = None
        ended = False

        async def next_chunk() -> StreamChunk | None:
            try:
                return await flight.run(agen.__anext__())
            except StopAsyncIteration:
                return None

        try:
            chunk: StreamChunk | None = first
            while chunk is not None:
                data = chunk.data
                if data is None:
                    ended = True
                    cost_note = self._finish_stream(rec, d, decision, parts, usage, finish, body, t0)
                    if cascade is not None:
                        rec["response"]["cascade"] = cascade
                    yield cost_note
                    yield chunk.raw
                    break
                if data.get("usage"):
                    usage = data["usage"]
                if not chunk.forward:  # asked for by the gateway (usage for accounting), not by the caller
                    chunk = await next_chunk()
                    continue
                for choice in data.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        parts.append(delta["content"])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                yield chunk.raw
                chunk = await next_chunk()
            if not ended:  # the tier ended without [DONE]
                ended = True
                yield self._finish_stream(rec, d, decision, parts, usage, finish, body, t0)
                yield StreamChunk.done().raw
        except asyncio.CancelledError:  # the client went away
            self._fail_stream(rec, d, ClientClosed("The client closed the connection during the stream."),
                              parts, usage, body, t0)
            raise
        except Exception as exc:
            if not isinstance(exc, TiergateError):
                log.exception("stream of request %s failed", rec["request_id"])
                exc = InternalError.of(exc)
            self._fail_stream(rec, d, exc, parts, usage, body, t0)
            yield b"data: " + orjson.dumps(exc.to_openai()) + b"\n\n"
        finally:
            if not ended and rec["status"] == "ok":
                rec["status"] = "error"
            self._flights.discard(flight)
            self._done()
            await asyncio.shield(self._record(rec))
            if decision.shadow and rec["status"] == "ok":
                self._spawn_shadow(body, decision.shadow, rec)

    def _fail_stream(self, rec: dict[str, Any], d: Dispatched, exc: TiergateError, parts: list[str],
                     usage: dict[str, Any] | None, body: dict[str, Any], t0: float) -> None:
        """A stream that broke off: the error, and what the tier had already used (its usage when it sent one, an
        estimate otherwise: an upstream bills the tokens it generated even when nobody read them)."""
        self._fail(rec, exc, t0)
        answer = "".join(parts)
        pt, ct, estimated = self._stream_usage(usage, body, answer)
        rec.update(answer=answer, response={**(rec.get("response") or {}),
                                            **({"usage_estimated": True} if estimated else {})} or None)
        self._account(rec, d.tier, pt, ct)

    @staticmethod
    def _stream_usage(usage: dict[str, Any] | None, body: dict[str, Any], answer: str) -> tuple[int, int, bool]:
        """(prompt tokens, completion tokens, estimated): the tier's usage chunk, else ~4 characters a token."""
        if usage and isinstance(usage.get("prompt_tokens"), int):
            return int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0), False
        from tiergate.routing.base import message_text

        prompt = "\n".join(message_text(m) for m in body.get("messages", []))
        return _estimate_tokens(prompt), _estimate_tokens(answer), True

    def _stream_result(self, result: TierResult, d: Dispatched, decision: RouteDecision, rec: dict[str, Any],
                       t0: float, body: dict[str, Any], flight: Flight) -> Response:
        """A whole answer (a cascade's) sent as a stream: one content delta, finish, usage when asked, [DONE]."""
        from tiergate.tiers.base import make_chunk

        data = result.data
        cid, model, created = data.get("id", "chatcmpl-x"), data.get("model", d.tier), int(data.get("created", 0))
        finish = "stop"
        try:
            finish = data["choices"][0].get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError):
            pass
        chunks = [StreamChunk.of(make_chunk(cid, model, created, delta={"role": "assistant", "content": ""})),
                  StreamChunk.of(make_chunk(cid, model, created, delta={"content": result.content or ""})),
                  StreamChunk.of(make_chunk(cid, model, created, delta={}, finish_reason=finish))]
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                     "total_tokens": result.prompt_tokens + result.completion_tokens}
            chunks.append(StreamChunk.of(make_chunk(cid, model, created, usage=usage)))
        chunks.append(StreamChunk.done())
        if "_cascade" in rec:
            cascade = rec.pop("_cascade")
        else:
            cascade = None

        async def replay() -> AsyncIterator[StreamChunk]:
            for c in chunks[1:]:
                yield c

        rec.update(tier=d.tier, route_reason=d.reason)
        relay = self._relay(chunks[0], replay(), d, decision, rec, t0, body, flight, cascade=cascade)
        return StreamingResponse(relay, media_type="text/event-stream",
                                 headers={**self._headers(rec), "Cache-Control": "no-cache"})

    def _finish_stream(self, rec: dict[str, Any], d: Dispatched, decision: RouteDecision, parts: list[str],
                       usage: dict[str, Any] | None, finish: str | None, body: dict[str, Any], t0: float) -> bytes:
        answer = "".join(parts)
        extra: dict[str, Any] = {"finish_reason": finish}
        pt, ct, estimated = self._stream_usage(usage, body, answer)
        if estimated:
            extra["usage_estimated"] = True
        rec["answer"] = answer
        self._answered(rec, d, decision, extra, pt, ct, t0)
        # SSE comment lines are ignored by clients; this one carries the request's cost, known only now
        cost = "unknown" if rec["cost_usd"] is None else f"{rec['cost_usd']:.8f}"
        return f": tiergate cost_usd={cost} tier={d.tier}\n\n".encode()


def _build_pricers(config: Config) -> dict[str, Any]:
    from tiergate.costs.pricebook import load_pricebook
    from tiergate.costs.pricing import build_pricer

    book = load_pricebook(config.pricebook)
    pricers = {}
    for name, tier in config.tiers.items():
        model = getattr(tier, "model", None)
        pricer = build_pricer(tier.price, book, model=model if tier.kind == "upstream" else None, warn=False)
        if getattr(pricer, "unknown", False):
            log.warning("tier %s: no price found (model %r): its records carry cost_usd NULL (unknown)",
                        name, model)
        pricers[name] = pricer
    return pricers
