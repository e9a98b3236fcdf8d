"""The `extractor` tier: a trained tiergate extractor (encoder span tagger) answering an extraction workload
in-process.

    tier = ExtractorTier("booking", ExtractorTierConfig(kind="extractor", model="models/booking"))
    await tier.start()
    result = await tier.complete({"model": "booking", "messages": [
        {"role": "system", "content": "requested slots: time"}, {"role": "user", "content": "13 please"}]})
    result.content                 # '{"time":"13"}': the compact JSON object of the fields found
    result.confidence              # the answer's confidence (its least certain field decision)
    result.data["tiergate"]        # {"fields": {"time": {"value", "confidence", "start", "end"}}, "confidence"}

The model reads the last user message, with the system messages before it as context (as it was trained).
Each value is the exact substring of the user message at [start, end). Fields with no value are left out of
the object. Concurrent requests are gathered into micro-batches in one worker thread (the classifier tier's
`MicroBatcher`); a stream is one chunk with the whole object, the usage chunk when asked for, then [DONE].
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from tiergate.data.dataset import context_text, input_text
from tiergate.errors import InvalidRequest
from tiergate.tiers.base import StreamChunk, Tier, TierResult, completion_id, make_chunk, make_completion
from tiergate.tiers.classifier import MicroBatcher


class ExtractorTier(Tier):
    kind = "extractor"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._predictor: Any = None
        self._batcher: MicroBatcher | None = None
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        """Size of each micro-batch run so far (for tests and metrics)."""

    @property
    def fields(self) -> list[str]:
        return list(self._predictor.fields) if self._predictor is not None else []

    def _load(self) -> None:
        with self._lock:
            if self._batcher is not None:
                return
            from tiergate.train.extractor_model import ExtractorPredictor

            self._predictor = ExtractorPredictor.load(self.config.model, self.config.device)
            self._batcher = MicroBatcher(self._predictor.extract, self.config.max_batch_size,
                                         self.config.batch_wait_ms, self.name, what="extractor")
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
            raise InvalidRequest("the extractor tier answers with one choice (n=1)", param="n")
        if body.get("tools") and body.get("tool_choice") != "none":
            raise InvalidRequest("the extractor tier cannot call tools", param="tools")
        if not input_text(body.get("messages") or []).strip():
            raise InvalidRequest("the extractor tier needs a user message with text", param="messages")

    async def _extract(self, body: dict[str, Any]) -> Any:
        self.check_request(body)
        if self._batcher is None:
            await self.start()
        assert self._batcher is not None
        messages = body["messages"]
        return await self._batcher.submit((context_text(messages), input_text(messages)))

    @staticmethod
    def _info(ext: Any) -> dict[str, Any]:
        return {"fields": {name: {"value": v.value, "confidence": v.confidence, "start": v.start, "end": v.end}
                           for name, v in ext.fields.items()},
                "confidence": ext.confidence}

    async def complete(self, body: dict[str, Any]) -> TierResult:
        ext = await self._extract(body)
        info = self._info(ext)
        data = make_completion(body.get("model") or self.name, ext.answer, prompt_tokens=ext.prompt_tokens,
                               completion_tokens=ext.completion_tokens)
        data["tiergate"] = info
        return TierResult(data, prompt_tokens=ext.prompt_tokens, completion_tokens=ext.completion_tokens,
                          confidence=ext.confidence, extra={"tiergate": info})

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        ext = await self._extract(body)
        cid, created, model = completion_id(), int(time.time()), body.get("model") or self.name
        chunk = make_chunk(cid, model, created, delta={"role": "assistant", "content": ext.answer},
                           finish_reason="stop")
        chunk["tiergate"] = self._info(ext)
        yield StreamChunk.of(chunk)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": ext.prompt_tokens, "completion_tokens": ext.completion_tokens,
                     "total_tokens": ext.prompt_tokens + ext.completion_tokens}
            yield StreamChunk.of(make_chunk(cid, model, created, usage=usage))
        yield StreamChunk.done()
