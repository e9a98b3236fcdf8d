"""The `classifier` tier: a trained tiergate classifier answering a label workload in-process.

    tier = ClassifierTier("intents", ClassifierTierConfig(kind="classifier", model="models/intents"))
    await tier.start()
    result = await tier.complete({"model": "intents", "messages": [{"role": "user", "content": "card lost"}]})
    result.content                      # "lost_or_stolen_card"
    result.confidence                   # calibrated probability of that label
    result.data["tiergate"]             # {"label": ..., "confidence": ..., "top": [{"label", "probability"}, ...]}

The model reads the last user message. Concurrent requests are gathered into micro-batches (up to
`max_batch_size`, waiting at most `batch_wait_ms` for company) and run in one worker thread, so the event loop
never blocks on torch. A stream is one chunk with the label (and finish_reason "stop"), the usage chunk when
`stream_options.include_usage` asks for it, then [DONE].
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from tiergate.data.dataset import input_text
from tiergate.errors import InvalidRequest, UpstreamError
from tiergate.tiers.base import StreamChunk, Tier, TierResult, completion_id, make_chunk, make_completion

TOP_K = 5
_Item = tuple[Any, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _resolve(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class MicroBatcher:
    """Runs `fn(list_of_inputs) -> list_of_outputs` in one thread over batches of concurrent submissions
    (inputs are texts for the classifier tier, (context, text) pairs for the extractor tier)."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch_size: int, wait_ms: float,
                 name: str = "classifier", what: str = "classifier") -> None:
        self.fn = fn
        self.what = what
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000.0
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"tiergate-{name}-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((item, fut, loop))
        return fut

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, deadline = [first], time.monotonic() + self.wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, stopping = self._gather(first)
            self.batch_sizes.append(len(batch))
            try:
                results = self.fn([item for item, _, _ in batch])
                error: BaseException | None = None
            except Exception as exc:  # the model failed: every waiting request gets the error
                results, error = [None] * len(batch), UpstreamError(f"{self.what} failed: {exc}")
            for (_, fut, loop), result in zip(batch, results, strict=True):
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, fut, result, error)


class ClassifierTier(Tier):
    kind = "classifier"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._predictor: Any = None
        self._batcher: MicroBatcher | None = None
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        """Size of each micro-batch run so far (for tests and metrics)."""

    @property
    def labels(self) -> list[str]:
        return list(self._predictor.labels) if self._predictor is not None else []

    def _load(self) -> None:
        with self._lock:
            if self._batcher is not None:
                return
            from tiergate.train.classifier_model import ClassifierPredictor

            self._predictor = ClassifierPredictor.load(self.config.model, self.config.device)
            self._batcher = MicroBatcher(lambda texts: self._predictor.predict(texts, top_k=TOP_K),
                                         self.config.max_batch_size, self.config.batch_wait_ms, self.name)
            self._batcher.batch_sizes = self.batch_sizes

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.stop)
        self._predictor = None

    def check_request(self, body: dict[str, Any]) -> None:
        if int(body.get("n") or 1) != 1:
            raise InvalidRequest("the classifier tier answers with one choice (n=1)", param="n")
        if body.get("tools") and body.get("tool_choice") != "none":
            raise InvalidRequest("the classifier tier cannot call tools", param="tools")
        if not input_text(body.get("messages") or []).strip():
            raise InvalidRequest("the classifier tier needs a user message with text", param="messages")

    async def _predict(self, body: dict[str, Any]) -> Any:
        self.check_request(body)
        if self._batcher is None:
            await self.start()
        assert self._batcher is not None
        return await self._batcher.submit(input_text(body["messages"]))

    @staticmethod
    def _info(pred: Any) -> dict[str, Any]:
        return {"label": pred.label, "confidence": pred.confidence,
                "top": [{"label": label, "probability": p} for label, p in pred.top]}

    async def complete(self, body: dict[str, Any]) -> TierResult:
        pred = await self._predict(body)
        info = self._info(pred)
        data = make_completion(body.get("model") or self.name, pred.label,
                               prompt_tokens=pred.prompt_tokens, completion_tokens=1)
        data["tiergate"] = info
        return TierResult(data, prompt_tokens=pred.prompt_tokens, completion_tokens=1,
                          confidence=pred.confidence, extra={"tiergate": info})

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        pred = await self._predict(body)
        cid, created, model = completion_id(), int(time.time()), body.get("model") or self.name
        chunk = make_chunk(cid, model, created, delta={"role": "assistant", "content": pred.label},
                           finish_reason="stop")
        chunk["tiergate"] = self._info(pred)
        yield StreamChunk.of(chunk)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": pred.prompt_tokens, "completion_tokens": 1,
                     "total_tokens": pred.prompt_tokens + 1}
            yield StreamChunk.of(make_chunk(cid, model, created, usage=usage))
        yield StreamChunk.done()
