"""A generation engine with continuous batching, for in-process causal LMs.

    engine = LMEngine(model, tokenizer, max_batch_size=8, batch_wait_ms=2.0)
    engine.start()
    result = await engine.generate(prompt_ids, SamplingParams(max_tokens=32, temperature=0))
    stream = engine.submit(prompt_ids, params, streaming=True)
    async for delta in stream: ...        # Delta(text, logprobs); stream.result afterwards
    engine.stats()                         # EngineStats: proof that requests shared forward passes
    engine.stop()

Why batching: a small model on a CPU or GPU is bound by weight reads, not arithmetic, so decoding 8 rows costs
little more than decoding one. Requests arriving within `batch_wait_ms` of an idle engine are prefilled
together; requests arriving while a batch runs are prefilled on their own and then joined into the running
batch (continuous batching): their KV cache is left-padded to the running cache's length and concatenated on
the batch axis, with a 2-D attention mask hiding the padding and explicit position ids keeping each row's
positions its own. Finished rows leave the batch at once and the all-padding columns they leave are trimmed.

All model work runs in one worker thread (torch releases the GIL), never on the asyncio loop; tokens go back
to each request's asyncio queue through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tiergate.errors import InvalidRequest, UpstreamError
from tiergate.tiers.lm_request import GenerationResult, GenerationStream, RequestRow, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters since start; `max_batch_size` > 1 proves that requests shared forward passes."""

    requests: int = 0
    finished: int = 0
    prefill_batches: int = 0
    """Prefill forward passes (each may hold several requests)."""
    decode_steps: int = 0
    """Batched one-token forward passes."""
    max_batch_size: int = 0
    """Most rows in one forward pass (prefill or decode)."""
    joined_running: int = 0
    """Requests joined into a batch that was already decoding (continuous batching)."""
    tokens_generated: int = 0


@dataclass
class _Pending:
    prompt_ids: list[int]
    params: SamplingParams
    stream: GenerationStream
    streaming: bool


class LMEngine:
    """Continuous-batching decoder over a Hugging Face causal LM; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, batch_wait_ms: float = 2.0,
                 num_threads: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.num_threads = num_threads
        self.device = next(model.parameters()).device
        self._eos_ids = frozenset(_eos_ids(model, tokenizer))
        self._special_ids = frozenset(getattr(tokenizer, "all_special_ids", []) or [])
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos_ids, default=0)
        self._pieces: dict[int, str] = {}
        self._token_bytes = token_bytes_reader(tokenizer)
        self._inbox: queue.Queue[_Pending | None] = queue.Queue()
        self._stats = EngineStats()
        self._stats_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._rows: list[RequestRow] = []
        self._cache: Any = None
        self._mask: Any = None
        self._next_pos: Any = None
        self._can_join = True

    # -- asyncio side -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        import torch

        if self.device.type == "cpu":
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            # intra-op threads beyond ~8 only add contention for a small model's matmuls
            torch.set_num_threads(self.num_threads or max(1, min(cpus, 8)))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tiergate-lm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker; requests still queued or running end with an UpstreamError."""
        if self._thread is None:
            return
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, prompt_ids: list[int], params: SamplingParams, *, streaming: bool = False) -> GenerationStream:
        """Queue one request; call from a running event loop. With `streaming`, deltas arrive as produced."""
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty", param="messages")
        if self._thread is None:
            raise UpstreamError("the local model engine is not running")
        stream = GenerationStream(asyncio.get_running_loop())
        self._inbox.put(_Pending(list(prompt_ids), params, stream, streaming))
        return stream

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationResult:
        stream = self.submit(prompt_ids, params)
        try:
            return await stream.collect()
        finally:
            stream.cancel()

    def stats(self) -> EngineStats:
        with self._stats_lock:
            return replace(self._stats)

    # -- worker side --------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stopping:
                new: list[_Pending] = []
                try:
                    new = self._take_new()
                    if new:
                        self._prefill(new)
                    if self._rows:
                        self._decode_step()
                except Exception as exc:  # a failed forward must not kill the worker or strand requests
                    log.exception("local model step failed")
                    error = UpstreamError(f"local model failed: {type(exc).__name__}: {exc}")
                    joined = {id(row.stream) for row in self._rows}
                    for pending in new:
                        if id(pending.stream) not in joined:
                            self._post(pending.stream, error)
                    self._fail_all(error)
        self._fail_all(UpstreamError("the local model engine stopped"))
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._post(item.stream, UpstreamError("the local model engine stopped"))

    def _take_new(self) -> list[_Pending]:
        """New requests for this round: wait for the first (and `batch_wait_ms` for company) when idle; take
        only what is already queued when a batch is running, so running rows are not held up."""
        capacity = self.max_batch_size - len(self._rows)
        if capacity <= 0 or (self._rows and not self._can_join):
            return []
        taken: list[_Pending] = []
        if not self._rows:
            try:
                first = self._inbox.get(timeout=0.5)
            except queue.Empty:
                return []
            if first is None:
                return []
            taken.append(first)
            deadline = time.monotonic() + self.batch_wait_s
            while len(taken) < capacity:
                remaining = deadline - time.monotonic()
                try:
                    item = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    break
                taken.append(item)
        else:
            while len(taken) < capacity:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    break
                taken.append(item)
        return [p for p in taken if not p.stream.cancelled]

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            self._pieces[token] = piece
        return piece

    def _prefill(self, new: list[_Pending]) -> None:
        import torch
        from transformers import DynamicCache

        rows = [RequestRow(p.prompt_ids, p.params, p.stream, streaming=p.streaming, tokenizer=self.tokenizer,
                           piece=self._piece, eos_ids=self._eos_ids, special_ids=self._special_ids,
                           token_bytes=self._token_bytes) for p in new]
        width = max(len(p.prompt_ids) for p in new)
        ids = torch.full((len(new), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, p in enumerate(new):
            ids[i, width - len(p.prompt_ids):] = torch.tensor(p.prompt_ids)
            mask[i, width - len(p.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        next_pos = mask.sum(-1).to(self.device)
        joining = bool(self._rows)
        if joining:
            self._merge(cache, mask.to(self.device), next_pos)
        else:
            self._can_join = all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)
            self._cache, self._mask, self._next_pos = cache, mask.to(self.device), next_pos
        self._rows.extend(rows)
        with self._stats_lock:
            self._stats.requests += len(rows)
            self._stats.prefill_batches += 1
            self._stats.joined_running += len(rows) if joining else 0
            self._stats.max_batch_size = max(self._stats.max_batch_size, len(rows))
        self._advance(out.logits[:, -1, :], offset=len(self._rows) - len(rows))

    def _merge(self, cache: Any, mask: Any, next_pos: Any) -> None:
        """Join a freshly prefilled cache into the running one: left-pad the shorter to the longer, stack rows."""
        import torch
        import torch.nn.functional as F

        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            for attr in ("keys", "values"):
                a = F.pad(getattr(old_layer, attr), (0, 0, width - old_len, 0))
                b = F.pad(getattr(new_layer, attr), (0, 0, width - new_len, 0))
                setattr(old_layer, attr, torch.cat([a, b], dim=0))
        self._mask = torch.cat([F.pad(self._mask, (width - old_len, 0)), F.pad(mask, (width - new_len, 0))])
        self._next_pos = torch.cat([self._next_pos, next_pos])

    def _decode_step(self) -> None:
        import torch

        tokens = torch.tensor([[row.last_token] for row in self._rows], dtype=torch.long, device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self._mask, position_ids=self._next_pos[:, None],
                         past_key_values=self._cache, use_cache=True)
        self._next_pos = self._next_pos + 1
        with self._stats_lock:
            self._stats.decode_steps += 1
            self._stats.max_batch_size = max(self._stats.max_batch_size, len(self._rows))
        self._advance(out.logits[:, -1, :], offset=0)

    def _advance(self, logits: Any, offset: int) -> None:
        """Let rows[offset:] choose their next token from `logits`, emit their text, drop finished rows."""
        import torch

        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        logits = logits.cpu()
        produced = finished = 0
        posts: list[tuple[GenerationStream, Any]] = []
        for i, row in enumerate(self._rows[offset:]):
            if row.stream.cancelled:
                row.finish_reason = "cancelled"
                continue
            before = len(row.ids)
            row.step(logits[i], logprobs[i])
            produced += len(row.ids) - before
            if row.streaming and (delta := row.take_delta()) is not None:
                posts.append((row.stream, delta))
            if row.finished:
                finished += 1
                posts.append((row.stream, row.result()))
        with self._stats_lock:  # before posting, so a caller that got its answer sees it counted
            self._stats.tokens_generated += produced
            self._stats.finished += finished
        for stream, item in posts:
            self._post(stream, item)
        self._drop_finished()

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._next_pos = [], None, None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._next_pos = self._next_pos[index]
        if self._can_join:  # trim columns that are padding in every remaining row
            used = self._mask.any(dim=0).nonzero()
            first = int(used[0]) if len(used) else 0
            if first > 0:
                for layer in self._cache.layers:
                    layer.keys = layer.keys[:, :, first:]
                    layer.values = layer.values[:, :, first:]
                self._mask = self._mask[:, first:]

    def _fail_all(self, exc: BaseException) -> None:
        for row in self._rows:
            self._post(row.stream, exc)
        self._rows, self._cache, self._mask, self._next_pos = [], None, None, None

    @staticmethod
    def _post(stream: GenerationStream, item: Any) -> None:
        try:
            stream.loop.call_soon_threadsafe(stream._push, item)
        except RuntimeError:  # the caller's loop has closed: nobody is listening any more
            stream.cancelled = True


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character -> byte: printable bytes stand for themselves, the others for
    the characters from U+0100 on, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes_reader(tokenizer: Any) -> Callable[[int], bytes]:
    """A function giving one token's own bytes (cached): through the byte-level alphabet for byte-level BPE
    tokenizers (GPT-2, Llama 3, SmolLM2, Qwen), a `<0xAB>` byte-fallback token as its byte, else the token's
    decoded text as UTF-8."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    alphabet = _byte_level_alphabet() if type(decoder).__name__ == "ByteLevel" else None
    cache: dict[int, bytes] = {}

    def read(token: int) -> bytes:
        raw = cache.get(token)
        if raw is None:
            name = tokenizer.convert_ids_to_tokens(token)
            fallback = _BYTE_FALLBACK.match(name) if isinstance(name, str) else None
            if fallback:
                raw = bytes([int(fallback.group(1), 16)])
            elif alphabet is not None and isinstance(name, str) and all(c in alphabet for c in name):
                raw = bytes(alphabet[c] for c in name)
            else:
                raw = tokenizer.decode([token], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False).encode()
            cache[token] = raw
        return raw

    return read


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends an answer: the generation config's EOS (int or list) and the tokenizer's."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list | tuple):
        ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
