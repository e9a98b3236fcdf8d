"""The `classifier` tier: a trained tiergate classifier answering a label workload in-process.

    tier = ClassifierTier("intents", ClassifierTierConfig(kind="classifier", model="models/intents"))
    await tier.start()
    result = await tier.complete({"model": "intents", "messages": [{"role": "user", "content": "card lost"}]})
    result.content                      # "lost_or_stolen_card"
    result.confidence                   # calibrated probability of that label
    result.data["tiergate"]             # {"label": ..., "confidence": ..., "top": [{"label", "probability"}, ...]}

The model reads the last user message. Concurrent requests are gathered into micro-batches (up to
`max_batch_size`, waiting at most `batch_wait_ms` for company) and run in one worker thread (`tiers.batched`).
A stream is one chunk with the label, the usage chunk when asked for, then [DONE].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tiergate.data.dataset import input_text
from tiergate.tiers.batched import Answer, BatchedModelTier, MicroBatcher

__all__ = ["ClassifierTier", "MicroBatcher", "TOP_K"]

TOP_K = 5


class ClassifierTier(BatchedModelTier):
    kind = "classifier"
    what = "classifier"

    @property
    def labels(self) -> list[str]:
        return list(self._predictor.labels) if self._predictor is not None else []

    def _load_model(self) -> tuple[Any, Callable[[list[Any]], list[Any]]]:
        from tiergate.train.classifier_model import ClassifierPredictor

        predictor = ClassifierPredictor.load(self.config.model, self.config.device)
        return predictor, lambda texts: predictor.predict(texts, top_k=TOP_K)

    def _input(self, messages: list[dict[str, Any]]) -> Any:
        return input_text(messages)

    def _answer(self, pred: Any) -> Answer:
        info = {"label": pred.label, "confidence": pred.confidence,
                "top": [{"label": label, "probability": p} for label, p in pred.top]}
        return Answer(pred.label, pred.prompt_tokens, 1, pred.confidence, info)
