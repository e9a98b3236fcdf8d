"""Train / validation / test splits: stratified by label for classification, grouped so that one input
(after case and whitespace folding) never lands in two splits, and checked for leakage afterwards."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.data.dataset import Dataset, Example, context_text
from tiergate.errors import DataError


def normalize_input(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def text_key(ex: Example) -> str:
    """What two inputs share when they are the same input: the user text, case and whitespace folded."""
    return normalize_input(ex.text)


def context_key(ex: Example) -> str:
    """The user text together with the system messages before it (case and whitespace folded): for data where
    the context changes the answer (the extractor's "requested slots: time"), two inputs are the same only when
    both parts are."""
    if isinstance(ex.input, str):
        return normalize_input(ex.input)
    return normalize_input(context_text(ex.input)) + " || " + normalize_input(ex.text)


@dataclass
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def check_leakage(train: Dataset, test: Dataset, key: Callable[[Example], str] = text_key) -> None:
    """Raise DataError when an input of `test` also appears in `train` (case and whitespace folded; `key` says
    what an input is, e.g. `context_key`)."""
    seen = {key(ex) for ex in train}
    leaked = [ex for ex in test if key(ex) in seen]
    if leaked:
        first = leaked[0]
        raise DataError(f"leakage: {len(leaked)} input(s) also appear in the training set "
                        f"{train.path or ''}, first {first.text[:60]!r}".rstrip(),
                        path=test.path, line=first.line)


def remove_overlap(train: Dataset, test: Dataset, key: Callable[[Example], str] = text_key) -> tuple[Dataset, int]:
    """`train` without the examples whose input (case and whitespace folded; see `key`) appears in `test`, and
    how many were removed; use it to keep a published test set whole."""
    held = {key(ex) for ex in test}
    keep = [i for i, ex in enumerate(train) if key(ex) not in held]
    return train.subset(keep), len(train) - len(keep)


def _allocate(n: int, val: float, test: float) -> tuple[int, int]:
    """How many of n groups go to validation and test; a class keeps at least one training group."""
    n_test = round(n * test)
    n_val = round(n * val)
    while n_test + n_val >= n and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_dataset(dataset: Dataset, *, val: float = 0.1, test: float = 0.1, seed: int = 0,
                  stratify: bool | None = None, stratify_by: Callable[[Example], str] | None = None) -> Splits:
    """Split into train / validation / test. Stratified by label when the task is classification
    (or `stratify=True`), or by `stratify_by(example)` when given (e.g. which fields an extraction example has);
    duplicate inputs stay together; the result is leakage-checked."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions must be in [0, 1) and sum below 1, got val={val} test={test}",
                        path=dataset.path)
    stratify = dataset.task == "classification" if stratify is None else stratify
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(dataset):
        groups[normalize_input(ex.text)].append(i)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        first = dataset[members[0]]
        key = stratify_by(first) if stratify_by is not None else str(first.output) if stratify else ""
        strata[key].append(members)

    rng = random.Random(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for key in sorted(strata):
        bucket = strata[key]
        rng.shuffle(bucket)
        n_val, n_test = _allocate(len(bucket), val, test)
        for j, members in enumerate(bucket):
            part = "test" if j < n_test else "validation" if j < n_test + n_val else "train"
            parts[part].extend(members)
    for idx in parts.values():
        idx.sort()
    base = dataset.path or "dataset"
    splits = Splits(
        train=dataset.subset(parts["train"], f"{base}#train"),
        validation=dataset.subset(parts["validation"], f"{base}#validation"),
        test=dataset.subset(parts["test"], f"{base}#test"),
    )
    check_leakage(splits.train, splits.test)
    check_leakage(splits.train, splits.validation)
    return splits
