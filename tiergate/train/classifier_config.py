"""Options of the `classifier` trainer (a dataclass; each field's help is shown by `tiergate train --options`):
the shared encoder options (`tiergate.train.encoder_config`) plus pooling, label smoothing, the lexical and kNN
votes and ensembles."""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.train.encoder_config import RUN_ONLY, EncoderTrainConfig, opt

__all__ = ["RUN_ONLY", "ClassifierConfig"]


@dataclass
class ClassifierConfig(EncoderTrainConfig):
    pooling: str = opt("mean", "sentence vector: 'mean' of token states or the 'cls' token")
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")
    rdrop_alpha: float = opt(0.0, "R-Drop: each batch passes twice through dropout and this weight times the "
                                  "symmetric KL between the two predictions joins the loss (0 = off; twice the "
                                  "compute per step)")
    contrastive_weight: float = opt(0.0, "supervised contrastive loss (Khosla et al. 2020) on the normalised sentence "
                                         "vectors, this weight beside the cross-entropy: each batch row gets a "
                                         "partner of its label drawn from the training data, outliers are "
                                         "negatives to every row; tighter label clusters, so distance-based "
                                         "out-of-scope signals separate better (0 = off; about 1.8 times the "
                                         "compute per step)")
    contrastive_temperature: float = opt(0.1, "temperature of the supervised contrastive loss")
    knn_weight: float = opt(0.0, "blend in a kNN vote over training embeddings with this weight (0 = off)")
    knn_k: int = opt(10, "neighbours in the kNN vote")
    lexical: bool = opt(True, "blend in a lexical vote (TF-IDF word 1-2-grams and character 1-4-grams into a logistic "
                              "regression), its weight fitted with the temperature on validation data (0 when it "
                              "does not help); cheap, and it corrects the encoder on exact wording")
    lexical_weight: float | None = opt(None, "fixed weight of the lexical vote (None: fitted on validation data, "
                                             "0.5 when there is none)")
    lexical_c: float = opt(20.0, "inverse regularisation strength of the lexical vote's logistic regression")
    outlier_label: str | None = opt(None, "examples with this label are outliers (captured out-of-scope traffic), not "
                                          "a class: outlier exposure trains the model to spread its probability "
                                          "over every class on them, so its confidence and energy mark what it "
                                          "was not trained for (None = off)")
    outlier_weight: float = opt(0.5, "weight of the outlier-exposure loss (cross-entropy to the uniform distribution)")
    outlier_batch: int = opt(8, "outliers drawn (with replacement) into each training batch")
    members: int = opt(1, "train this many models (seeds seed, seed+1, ...) and serve their averaged probabilities: "
                          "a deep ensemble, better accuracy and confidence ranking at N times the cost")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.knn_k < 1:
            raise ValueError("knn_k must be at least 1")
        if self.members < 1:
            raise ValueError("members must be at least 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.lexical_weight is not None and self.lexical_weight < 0:
            raise ValueError("lexical_weight must be >= 0")
        if self.lexical_c <= 0:
            raise ValueError("lexical_c must be positive")
        if self.rdrop_alpha < 0:
            raise ValueError("rdrop_alpha must be >= 0")
        if self.contrastive_weight < 0:
            raise ValueError("contrastive_weight must be >= 0")
        if self.contrastive_temperature <= 0:
            raise ValueError("contrastive_temperature must be positive")
        if self.contrastive_weight > 0 and self.rdrop_alpha > 0:
            raise ValueError("contrastive_weight and rdrop_alpha cannot be combined (set one of them to 0)")
        if self.outlier_weight < 0:
            raise ValueError("outlier_weight must be >= 0")
        if self.outlier_batch < 1:
            raise ValueError("outlier_batch must be at least 1")
        if self.outlier_label is not None and not str(self.outlier_label).strip():
            raise ValueError("outlier_label must be a non-empty label (or None)")
        if self.knn_weight < 0:
            raise ValueError("knn_weight must be >= 0")
        if self.pooling not in ("mean", "cls"):
            raise ValueError("pooling must be 'mean' or 'cls'")
