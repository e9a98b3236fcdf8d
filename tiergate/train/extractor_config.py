"""Options of the `extractor` trainer (a dataclass; each field's help is shown by `tiergate train extractor
--options`): the shared encoder options (`tiergate.train.encoder_config`) with defaults for token tagging."""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.train.encoder_config import EncoderTrainConfig, opt


@dataclass
class ExtractorConfig(EncoderTrainConfig):
    epochs: float = opt(5.0, "passes over the training data (fractions allowed)")
    learning_rate: float = opt(2e-4, "peak learning rate of the encoder's top layer")
    head_learning_rate: float = opt(1e-3, "peak learning rate of the tagging head")
    val_fraction: float = opt(0.05, "validation share carved from train (stratified by which fields an example "
                                    "has) when no eval set is given")
    use_context: bool = opt(True, "encode the system messages (e.g. 'requested slots: time') as the first "
                                  "segment of a text pair; only the user text is tagged")
    freeze_word_embeddings: bool = opt(True, "keep the encoder's word-embedding matrix fixed (a third of MiniLM's "
                                             "weights: faster steps on CPU, little change in quality)")

