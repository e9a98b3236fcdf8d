"""A lexical vote for the classifier: TF-IDF word and character n-grams into a multinomial logistic regression.

    lex = LexicalModel.fit(texts, label_ids, num_labels)
    lex.log_proba(["card not working"])          # [1, num_labels]
    lex.save(model_dir); LexicalModel.load(model_dir)

A fine-tuned encoder and a bag of n-grams make different mistakes (the encoder generalises over paraphrase, the
n-grams keep exact product words and spellings), so the product of their probabilities, with the n-gram vote's
weight fitted on validation data, beats either alone: on BANKING77 a MiniLM classifier gains about 0.4 points
(see benchmarks/banking77_classifier.py). The model is saved as plain arrays and JSON (no pickle), so a saved
classifier loads in any scikit-learn version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEXICAL_JSON = "lexical.json"
LEXICAL_ARRAYS = "lexical.safetensors"


@dataclass(frozen=True)
class LexicalOptions:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (1, 4)
    char_min_df: int = 2
    c: float = 20.0
    """inverse L2 regularisation strength of the logistic regression"""
    max_iter: int = 3000


class LexicalModel:
    def __init__(self, vectorizers: list[Any], coef: np.ndarray, intercept: np.ndarray, options: LexicalOptions,
                 classes: np.ndarray) -> None:
        self.vectorizers = vectorizers
        self.coef = coef
        self.intercept = intercept
        self.options = options
        self.classes = classes
        """label ids the regression saw, in its column order (a label absent from training gets no column)"""

    @classmethod
    def fit(cls, texts: list[str], labels: list[int] | np.ndarray, options: LexicalOptions | None = None,
            ) -> LexicalModel:
        from sklearn.linear_model import LogisticRegression

        options = options or LexicalOptions()
        y = np.asarray(labels, dtype=np.int64)
        vectorizers = _vectorizers(options, len(texts))
        features = _stack([v.fit_transform(texts) for v in vectorizers])
        classes = np.unique(y)
        if len(classes) < 2:
            coef = np.zeros((1, features.shape[1]), dtype=np.float32)
            return cls(vectorizers, coef, np.zeros(1, dtype=np.float32), options, classes)
        reg = LogisticRegression(C=options.c, max_iter=options.max_iter).fit(features, y)
        coef, intercept = reg.coef_, reg.intercept_
        if len(classes) == 2:  # scikit-learn keeps one row for two classes: expand to a softmax over both
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(vectorizers, np.ascontiguousarray(coef, dtype=np.float32),
                   np.ascontiguousarray(intercept, dtype=np.float32), options, classes)

    def log_proba(self, texts: list[str], num_labels: int) -> np.ndarray:
        """[len(texts), num_labels] log-probabilities; a label the regression never saw gets log(1e-6)."""
        from scipy.special import log_softmax

        out = np.full((len(texts), num_labels), np.log(1e-6), dtype=np.float64)
        if not texts:
            return out
        features = _stack([v.transform(texts) for v in self.vectorizers])
        scores = features @ self.coef.T + self.intercept
        out[:, self.classes] = log_softmax(np.asarray(scores, dtype=np.float64), axis=1)
        return out

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        d = Path(directory)
        info = {"options": asdict(self.options), "classes": self.classes.tolist(),
                "vectorizers": [{"analyzer": v.analyzer, "ngram_range": list(v.ngram_range),
                                 "token_pattern": v.token_pattern,
                                 "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()}}
                                for v in self.vectorizers]}
        (d / LEXICAL_JSON).write_text(json.dumps(info))
        arrays = {"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)}
        for i, v in enumerate(self.vectorizers):
            arrays[f"idf{i}"] = np.ascontiguousarray(v.idf_, dtype=np.float64)
        save_file(arrays, str(d / LEXICAL_ARRAYS))

    @classmethod
    def load(cls, directory: str | Path) -> LexicalModel | None:
        """The lexical vote saved in `directory`, or None when it has none."""
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        d = Path(directory)
        if not (d / LEXICAL_JSON).is_file():
            return None
        info = json.loads((d / LEXICAL_JSON).read_text())
        arrays = load_file(str(d / LEXICAL_ARRAYS))
        opts = info["options"]
        options = LexicalOptions(**{**opts, "word_ngrams": tuple(opts["word_ngrams"]),
                                    "char_ngrams": tuple(opts["char_ngrams"])})
        vectorizers = []
        for i, spec in enumerate(info["vectorizers"]):
            v = TfidfVectorizer(analyzer=spec["analyzer"], ngram_range=tuple(spec["ngram_range"]), sublinear_tf=True,
                                vocabulary=spec["vocabulary"], token_pattern=spec["token_pattern"])
            v.idf_ = arrays[f"idf{i}"]
            vectorizers.append(v)
        return cls(vectorizers, arrays["coef"], arrays["intercept"], options, np.asarray(info["classes"]))


def _vectorizers(options: LexicalOptions, n_texts: int) -> list[Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    min_df = options.char_min_df if n_texts >= 20 * options.char_min_df else 1  # tiny data: keep every n-gram
    return [TfidfVectorizer(ngram_range=options.word_ngrams, sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=options.char_ngrams, sublinear_tf=True, min_df=min_df)]


def _stack(blocks: list[Any]) -> Any:
    from scipy.sparse import hstack

    return hstack(blocks).tocsr()


def fit_blend(model_logits: np.ndarray, lexical_logp: np.ndarray, labels: list[int] | np.ndarray,
              weights: np.ndarray | None = None) -> tuple[float, float]:
    """(weight, temperature) minimising validation log loss of softmax((model_logits + weight * lexical) / T),
    the weight searched on a grid (0 included: a vote that does not help is switched off)."""
    from tiergate.train.calibration import fit_temperature, nll

    y = np.asarray(labels, dtype=np.int64)
    grid = np.round(np.arange(0.0, 1.51, 0.1), 2) if weights is None else weights
    best: tuple[float, float, float] | None = None
    for w in grid:
        z = model_logits + w * lexical_logp
        t = fit_temperature(z, y)
        loss = nll(z, y, t)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, float(w), t)
    assert best is not None
    return best[1], best[2]
