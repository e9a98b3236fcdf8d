"""One generation request as the LM engine sees it: sampling parameters, the asyncio-side stream of deltas,
and the worker-side row state (token choice, detokenization, stop strings, JSON constraint, log-probs).

The worker thread owns `RequestRow`; the asyncio side owns `GenerationStream`. They meet only through
`loop.call_soon_threadsafe(stream._push, item)` and the `cancelled` flag, so neither blocks the other.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiergate.errors import InvalidRequest
from tiergate.tiers.json_prefix import JsonPrefix

if TYPE_CHECKING:
    import torch

JSON_CANDIDATES = 64
"""Top-k tokens tried at each JSON-constrained step before giving up and closing the object."""
JSON_MAX_WS_RUN = 24
"""Longest run of whitespace outside strings in JSON mode: small models otherwise pad forever."""
JSON_CLOSE_SLACK = 2
"""Tokens kept spare beyond the closing text's own when deciding whether the JSON budget is spent."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. temperature 0 is greedy; `json` constrains the output to a JSON object."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json: bool = False
    json_required: tuple[str, ...] = ()
    """Top-level keys the JSON object must hold before it may close (a json_schema's `required`)."""
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequest("temperature must be between 0 and 2", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        if not 0 <= self.top_logprobs <= 20:
            raise InvalidRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must not be empty", param="stop")


@dataclass
class TokenLogprob:
    """One generated token with its log-probability under the model (temperature 1), OpenAI-shaped."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)
    raw: bytes | None = None
    """The token's own bytes, None for `token.encode()`. A piece of a multi-byte character decodes to U+FFFD
    alone; its bytes are what lets a caller put the character back together."""
    top_raw: list[bytes] | None = None
    """The bytes of each `top` token, likewise."""

    def to_openai(self) -> dict[str, Any]:
        raw = self.raw if self.raw is not None else self.token.encode()
        top_raw = self.top_raw if self.top_raw is not None else [t.encode() for t, _ in self.top]
        return {"token": self.token, "logprob": self.logprob, "bytes": list(raw),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)}
                                 for (t, lp), b in zip(self.top, top_raw, strict=True)]}


@dataclass
class Delta:
    """New text of a streamed answer (may be empty when only log-probs arrived)."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    """'stop' (EOS, a stop string, or a closed JSON object) or 'length' (max_tokens)."""
    prompt_tokens: int
    completion_tokens: int
    mean_logprob: float
    """Mean log-probability of the generated tokens: a cheap confidence for cascades (exp() of it)."""
    logprobs: list[TokenLogprob] | None = None


class GenerationStream:
    """The asyncio side of one request: iterate for `Delta`s; `result` is set once iteration ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: asyncio.Queue[Delta | GenerationResult | BaseException] = asyncio.Queue()
        self.result: GenerationResult | None = None
        self.cancelled = False

    def _push(self, item: Delta | GenerationResult | BaseException) -> None:
        self._queue.put_nowait(item)

    def cancel(self) -> None:
        """Stop generating (the caller went away); the worker drops the row at its next step."""
        self.cancelled = True

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> Delta:
        if self.result is not None:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, GenerationResult):
            self.result = item
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def collect(self) -> GenerationResult:
        """Wait for the whole answer."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result


class RequestRow:
    """Worker-side state of one request in the running batch."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, stream: GenerationStream, *,
                 streaming: bool, tokenizer: Any, piece: Callable[[int], str], eos_ids: frozenset[int],
                 special_ids: frozenset[int], token_bytes: Callable[[int], bytes] | None = None) -> None:
        import torch

        self.prompt_ids = prompt_ids
        self.params = params
        self.stream = stream
        self.streaming = streaming
        self.tokenizer = tokenizer
        self.piece = piece
        self.token_bytes = token_bytes or (lambda i: piece(i).encode())
        self.eos_ids = eos_ids
        self.special_ids = special_ids
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.logprob_sum = 0.0
        self.logprob_count = 0
        self.token_logprobs: list[TokenLogprob] = []
        self.pending_logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None
        self.extra_tokens = 0
        self.json = JsonPrefix(params.json_required) if params.json else None
        self.json_blocked = False
        """Whether the last JSON step refused a token only because its closing text would not fit the budget."""
        self.generator = torch.Generator().manual_seed(
            params.seed if params.seed is not None else secrets.randbits(63))

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def last_token(self) -> int:
        return self.ids[-1]

    def step(self, logits: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Choose the next token from this row's logits (1-D) and advance the text; may finish the row."""
        if self.json is not None and self._json_budget_spent():
            self._close_json("length")
            return
        token = self._choose(logits)
        if token is None:
            self._close_json("length" if self.json_blocked else "stop")
            return
        lp = float(logprobs[token])
        self.logprob_sum += lp
        self.logprob_count += 1
        self.ids.append(token)
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return
        if self.params.logprobs:
            top: list[tuple[str, float]] = []
            top_raw: list[bytes] = []
            if self.params.top_logprobs:
                vals, idx = logprobs.topk(self.params.top_logprobs)
                top = [(self.piece(int(i)), float(v)) for v, i in zip(vals, idx, strict=True)]
                top_raw = [self.token_bytes(int(i)) for i in idx]
            entry = TokenLogprob(self.piece(token), lp, top, self.token_bytes(token), top_raw)
            self.token_logprobs.append(entry)
            self.pending_logprobs.append(entry)
        if self.json is not None:
            piece = self.piece(token)
            self.json.feed(piece)
            self.text += piece
        else:
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        self._check_stop()
        if self.finish_reason is None and self.json is not None and self.json.done:
            self.finish_reason = "length" if self.json_blocked else "stop"  # closed early for want of room
        if self.finish_reason is None and len(self.ids) >= self.params.max_tokens:
            self.finish_reason = "length"

    def _choose(self, logits: torch.Tensor) -> int | None:
        import torch

        p = self.params
        if self.json is not None:
            return self._choose_json(logits)
        if p.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = _top_p(probs, p.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _choose_json(self, logits: torch.Tensor) -> int | None:
        """The most probable (greedy) or a sampled token among the top-k that keeps the text a valid JSON
        prefix that can still be closed within max_tokens; when none of the top-k does (the model wants to write
        prose first, or another key the budget has no room for), the most probable such token of the whole
        vocabulary; None when there is none (the caller then closes the object)."""
        import torch

        assert self.json is not None
        p = self.params
        self.json_blocked = False
        scaled = logits / p.temperature if p.temperature > 0 else logits
        vals, idx = scaled.topk(min(JSON_CANDIDATES, scaled.shape[-1]))
        valid, valid_vals = self._json_valid(idx.tolist(), vals.tolist(), first_only=p.temperature == 0)
        if not valid:
            vals, idx = scaled.sort(descending=True)
            valid, valid_vals = self._json_valid(idx.tolist(), vals.tolist(), first_only=True)
        if not valid:
            return None
        if len(valid) == 1:
            return valid[0]
        probs = torch.softmax(torch.tensor(valid_vals), dim=-1)
        if p.top_p < 1.0:
            probs = _top_p(probs, p.top_p)
        return valid[int(torch.multinomial(probs, 1, generator=self.generator))]

    def _json_valid(self, ids: list[int], vals: list[float], *, first_only: bool) -> tuple[list[int], list[float]]:
        assert self.json is not None
        valid: list[int] = []
        valid_vals: list[float] = []
        for i, v in zip(ids, vals, strict=True):
            if i in self.special_ids or i in self.eos_ids:
                continue
            piece = self.piece(i)
            if not piece or "\ufffd" in piece:
                continue
            trial = self.json.copy()
            if not trial.feed(piece) or trial.ws_run > JSON_MAX_WS_RUN:
                continue
            if not self._json_room(trial, piece):
                self.json_blocked = True
                continue
            valid.append(i)
            valid_vals.append(v)
            if first_only:
                break
        return valid, valid_vals

    def _json_room(self, trial: JsonPrefix, piece: str) -> bool:
        """Whether, after `piece`, the tokens that close the object still fit in max_tokens. Without this a
        comma taken at the end of the budget had to be closed as `"":null}`, an invented key. The closing text's
        tokens after `piece` are estimated as the present closing text's tokens plus one per character it grows
        by (a bound for the changed part); one character grows it by at most 8, so far from the end of the
        budget nothing is computed."""
        room = self.params.max_tokens - len(self.ids) - 1 - JSON_CLOSE_SLACK - self._closer_tokens
        if trial.done or 8 * len(piece) + 8 <= room:
            return True
        return len(trial.closing_suffix()) - self._closer_chars <= room

    def _json_budget_spent(self) -> bool:
        """True when the next token might leave no room for the tokens that close the object (and, for
        `_json_room`, the size of that closing text in characters and tokens)."""
        assert self.json is not None
        closer = self.json.closing_suffix()
        self._closer_chars = len(closer)
        self._closer_tokens = len(self.tokenizer.encode(closer, add_special_tokens=False)) if closer else 0
        need = self._closer_tokens + JSON_CLOSE_SLACK if closer else 0
        return len(self.ids) + 1 + need > self.params.max_tokens

    def _close_json(self, reason: str) -> None:
        assert self.json is not None
        closer = self.json.closing_suffix()
        self.json.feed(closer)
        self.text += closer
        self.extra_tokens = len(self.tokenizer.encode(closer, add_special_tokens=False)) if closer else 0
        self.finish_reason = reason

    def _check_stop(self) -> None:
        if not self.params.stop:
            return
        start = max(0, self.sent - max(len(s) for s in self.params.stop))
        hits = [pos for s in self.params.stop if (pos := self.text.find(s, start)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.finish_reason = "stop"

    def take_delta(self) -> Delta | None:
        """The text that is safe to emit now: not a partial UTF-8 character, not a possible stop-string start."""
        end = len(self.text)
        if not self.finished:
            while end > self.sent and self.text[end - 1] == "\ufffd":
                end -= 1
            hold = 0
            for s in self.params.stop:
                for k in range(min(len(s) - 1, end - self.sent), hold, -1):
                    if self.text.endswith(s[:k], 0, end):
                        hold = k
                        break
            end -= hold
        if end <= self.sent and not self.pending_logprobs:
            return None
        delta = Delta(self.text[self.sent:end], self.pending_logprobs)
        self.sent = max(self.sent, end)
        self.pending_logprobs = []
        return delta

    def result(self) -> GenerationResult:
        assert self.finish_reason is not None
        mean = self.logprob_sum / self.logprob_count if self.logprob_count else -math.inf
        return GenerationResult(
            text=self.text, finish_reason=self.finish_reason, prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.ids) + self.extra_tokens, mean_logprob=mean,
            logprobs=self.token_logprobs if self.params.logprobs else None)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose mass reaches top_p."""
    import torch

    sorted_probs, order = probs.sort(descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
    keep[0] = True
    filtered = torch.zeros_like(probs)
    filtered[order[keep]] = sorted_probs[keep]
    return filtered / filtered.sum()
