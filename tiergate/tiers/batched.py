"""In-process model tiers (classifier, extractor): concurrent requests gathered into micro-batches that run in
one worker thread, so the event loop never blocks on torch.

A subclass names its model (`what`), loads its predictor and batch function in `_load_model`, turns a request's
messages into one model input in `_input`, and one model output into an `Answer` in `_answer`; this class
checks requests, batches them, and answers whole (`complete`) or as a stream: one chunk with the whole answer
(and finish_reason "stop"), the usage chunk when `stream_options.include_usage` asks for it, then [DONE].
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tiergate.data.dataset import input_text
from tiergate.errors import InvalidRequest, UpstreamError
from tiergate.tiers.base import StreamChunk, Tier, TierResult, completion_id, make_chunk, make_completion

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
                 name: str = "model", what: str = "model") -> None:
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


@dataclass
class Answer:
    """One model output as a chat answer: its content, token counts, confidence and the `tiergate` details."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None
    info: dict[str, Any]


class BatchedModelTier(Tier):
    what: ClassVar[str]
    """The model's name in errors ("classifier")."""
    answers_json: ClassVar[bool] = False
    """Whether the answer is a JSON object (so a JSON response_format is honoured)."""

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._predictor: Any = None
        self._batcher: MicroBatcher | None = None
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        """Size of each micro-batch run so far (for tests and metrics)."""

    @abstractmethod
    def _load_model(self) -> tuple[Any, Callable[[list[Any]], list[Any]]]:
        """The predictor and the function that runs it on a batch of inputs (called in a worker thread)."""

    @abstractmethod
    def _input(self, messages: list[dict[str, Any]]) -> Any:
        """The model input of a request's messages."""

    @abstractmethod
    def _answer(self, output: Any) -> Answer:
        """One model output as an answer."""

    def _load(self) -> None:
        with self._lock:
            if self._batcher is not None:
                return
            self._predictor, fn = self._load_model()
            self._batcher = MicroBatcher(fn, self.config.max_batch_size, self.config.batch_wait_ms, self.name,
                                         what=self.what)
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
            raise InvalidRequest(f"the {self.what} tier answers with one choice (n=1)", param="n")
        if body.get("tools") and body.get("tool_choice") != "none":
            raise InvalidRequest(f"the {self.what} tier cannot call tools", param="tools")
        if body.get("logprobs"):
            raise InvalidRequest(f"the {self.what} tier has no token log-probs", param="logprobs")
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind in ("json_object", "json_schema") and not self.answers_json:
            raise InvalidRequest(f"the {self.what} tier answers with a bare label, not JSON",
                                 param="response_format")
        if not input_text(body.get("messages") or []).strip():
            raise InvalidRequest(f"the {self.what} tier needs a user message with text", param="messages")

    async def _run(self, body: dict[str, Any]) -> Answer:
        self.check_request(body)
        if self._batcher is None:
            await self.start()
        assert self._batcher is not None
        return self._answer(await self._batcher.submit(self._input(body["messages"])))

    async def complete(self, body: dict[str, Any]) -> TierResult:
        ans = await self._run(body)
        data = make_completion(self.name, ans.content, prompt_tokens=ans.prompt_tokens,
                               completion_tokens=ans.completion_tokens)
        data["tiergate"] = ans.info
        return TierResult(data, prompt_tokens=ans.prompt_tokens, completion_tokens=ans.completion_tokens,
                          confidence=ans.confidence, extra={"tiergate": ans.info})

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        ans = await self._run(body)
        cid, created, model = completion_id(), int(time.time()), self.name
        chunk = make_chunk(cid, model, created, delta={"role": "assistant", "content": ans.content},
                           finish_reason="stop")
        chunk["tiergate"] = ans.info
        yield StreamChunk.of(chunk)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
                     "total_tokens": ans.prompt_tokens + ans.completion_tokens}
            yield StreamChunk.of(make_chunk(cid, model, created, usage=usage))
        yield StreamChunk.done()
