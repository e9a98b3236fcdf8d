"""A workload's drift reference, from its training data: an embedding sample and the label shares.

    reference, label_counts, labels = load_reference("data/train.jsonl", embed, monitor_config)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from tiergate.monitor.drift import EmbeddingReference


def load_reference(path: str, embed: Callable[[list[str]], np.ndarray], config: Any, *, embed_inputs: bool = True
                   ) -> tuple[EmbeddingReference | None, Counter[str] | None, list[str] | None]:
    """Read the dataset, embed a seeded sample of `config.reference_size` inputs (when `embed_inputs`) and
    count its labels (classification)."""
    from tiergate.data import read_dataset

    ds = read_dataset(path)
    reference = None
    if embed_inputs:
        rng = np.random.default_rng(config.seed)
        texts = ds.texts
        if len(texts) > config.reference_size:
            texts = [texts[i] for i in sorted(rng.choice(len(texts), config.reference_size, replace=False))]
        reference = EmbeddingReference.fit(embed(texts), size=config.reference_size, seed=config.seed)
    if ds.task != "classification":
        return reference, None, None
    counts = ds.label_counts()
    return reference, counts, sorted(counts)
