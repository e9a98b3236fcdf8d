"""The classifier's lexical vote (tiergate.train.lexical): TF-IDF n-grams into a logistic regression, saved as
plain arrays, and the validation fit of its blend weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiergate.train.lexical import LexicalModel, LexicalOptions, fit_blend

TEXTS = ["my card has not arrived", "where is my card", "card delivery status", "still no card in the post",
         "I want a refund", "refund my order please", "give me my money back", "refund for a faulty item",
         "hello there", "hi bot", "good morning", "hey how are you"]
LABELS = [0] * 4 + [1] * 4 + [2] * 4


def test_fit_predicts_its_training_words_and_reloads_identically(tmp_path: Path) -> None:
    model = LexicalModel.fit(TEXTS, LABELS)
    logp = model.log_proba(["when will my card arrive", "refund please", "hello"], 3)
    assert logp.shape == (3, 3) and np.allclose(np.exp(logp).sum(1), 1.0)
    assert logp.argmax(1).tolist() == [0, 1, 2]
    model.save(tmp_path)
    again = LexicalModel.load(tmp_path)
    assert again is not None
    assert np.allclose(again.log_proba(TEXTS, 3), model.log_proba(TEXTS, 3), atol=1e-6)
    assert LexicalModel.load(tmp_path / "nowhere") is None
    assert model.log_proba([], 3).shape == (0, 3)


def test_matches_scikit_learn_and_handles_two_and_unseen_classes() -> None:
    from scipy.sparse import hstack
    from sklearn.linear_model import LogisticRegression

    y = [0] * 4 + [2] * 8  # label 1 never seen; two classes in the regression
    model = LexicalModel.fit(TEXTS, y, LexicalOptions(c=5.0))
    logp = model.log_proba(TEXTS, 3)
    assert np.allclose(logp[:, 1], np.log(1e-6))
    features = hstack([v.transform(TEXTS) for v in model.vectorizers]).tocsr()
    ref = LogisticRegression(C=5.0, max_iter=3000).fit(features, y).predict_proba(features)
    assert np.allclose(np.exp(logp[:, [0, 2]]), ref, atol=1e-6)


def test_fit_blend_switches_off_a_useless_vote_and_weighs_a_useful_one() -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 5
    y = rng.integers(0, k, n)
    model = rng.normal(0, 1, (n, k))
    model[np.arange(n), y] += 1.0  # a weak model
    noise = np.log(rng.dirichlet(np.ones(k), n))
    weight, temperature = fit_blend(model, noise, y)
    assert weight == 0.0 and temperature > 0
    useful = rng.normal(0, 1, (n, k))
    useful[np.arange(n), y] += 2.0
    weight, _ = fit_blend(model, useful - np.log(np.exp(useful).sum(1, keepdims=True)), y)
    assert weight >= 0.5


@pytest.mark.parametrize("n", [3, 60])
def test_tiny_data_keeps_every_character_ngram(n: int) -> None:
    texts = (TEXTS * 5)[:n]
    model = LexicalModel.fit(texts, (LABELS * 5)[:n])
    assert len(model.vectorizers[1].vocabulary_) > 0
