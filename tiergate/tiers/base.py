"""The tier interface.

    tier = build_tier("frontier", config.tiers["frontier"])   # tiergate.tiers.registry
    await tier.start()
    result = await tier.complete({"model": "gpt-4o-mini", "messages": [...]})
    result.data["choices"][0]["message"]["content"], result.prompt_tokens, result.completion_tokens
    async for chunk in tier.stream({... "stream": True}):   # StreamChunk(data=dict | None, raw=bytes)
        ...
    await tier.close()

`body` is the caller's OpenAI chat-completions request as parsed JSON (the gateway has already checked its
shape). Tiers raise errors from `tiergate.errors`: InvalidRequest for fields they cannot honour (before any
work), UpstreamError / UpstreamTimeout / UpstreamHTTPError when they fail. A stream raises before its first
chunk when it cannot start, so the gateway can still fall back or answer with an HTTP error.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson


@dataclass
class TierResult:
    """A whole (non-streamed) answer."""

    data: dict[str, Any]
    """The OpenAI `chat.completion` object."""
    raw: bytes | None = None
    """Exact bytes to send back (upstream pass-through); None means serialize `data`."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    confidence: float | None = None
    """Calibrated confidence of the answer, when the tier has one (classifier, local LM log-probs)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str | None:
        try:
            return self.data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            return None

    def body_bytes(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.data)


@dataclass
class StreamChunk:
    """One server-sent event of a streamed answer."""

    data: dict[str, Any] | None
    """The parsed `chat.completion.chunk`; None for the final `[DONE]` marker."""
    raw: bytes
    """The exact SSE bytes to forward, e.g. b'data: {...}\\n\\n'."""
    forward: bool = True
    """False for a chunk the gateway asked for itself (the usage chunk of a caller who did not ask for
    usage): it is accounted, not sent to the caller."""

    @classmethod
    def of(cls, data: dict[str, Any]) -> StreamChunk:
        return cls(data, b"data: " + orjson.dumps(data) + b"\n\n")

    @classmethod
    def done(cls) -> StreamChunk:
        return cls(None, b"data: [DONE]\n\n")


class Tier(ABC):
    """A place answers come from. Subclasses set `kind` and implement `complete` and `stream`."""

    kind: ClassVar[str]

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    @property
    def zone(self) -> str:
        return str(getattr(self.config, "zone", "external"))

    def model_names(self) -> list[str]:
        """Model ids this tier answers for, listed by GET /v1/models beside the tier name."""
        return []

    async def start(self) -> None:
        """Open clients and load models. Called once, before the first request."""

    async def close(self) -> None:
        """Release clients and models."""

    def check_request(self, body: dict[str, Any]) -> None:
        """Raise InvalidRequest for request fields this tier cannot honour. Default: accept everything."""

    @abstractmethod
    async def complete(self, body: dict[str, Any]) -> TierResult:
        ...

    @abstractmethod
    def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        ...


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def make_completion(
    model: str, content: str, *, prompt_tokens: int, completion_tokens: int, finish_reason: str = "stop",
    extra_message: dict[str, Any] | None = None, cid: str | None = None,
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object, for tiers that build their own answers."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if extra_message:
        message.update(extra_message)
    return {
        "id": cid or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def make_chunk(
    cid: str, model: str, created: int, *, delta: dict[str, Any] | None = None, finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An OpenAI `chat.completion.chunk`; with `usage` and no delta it is the include_usage final chunk."""
    chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage is not None and delta is None and finish_reason is None:
        chunk["choices"] = []
        chunk["usage"] = usage
    else:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
    return chunk
