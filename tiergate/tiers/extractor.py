"""The `extractor` tier: a trained tiergate extractor (encoder span tagger) answering an extraction workload
in-process.

    tier = ExtractorTier("booking", ExtractorTierConfig(kind="extractor", model="models/booking"))
    await tier.start()
    result = await tier.complete({"model": "booking", "messages": [
        {"role": "system", "content": "requested slots: time"}, {"role": "user", "content": "13 please"}]})
    result.content                 # '{"time":"13"}': the compact JSON object of the fields found
    result.confidence              # the answer's confidence (its least certain field decision)
    result.data["tiergate"]        # {"fields": {"time": {"value", "confidence", "start", "end"}}, "confidence"}

The model reads the last user message, with the system messages before it as context (as it was trained).
Each value is the exact substring of the user message at [start, end). Fields with no value are left out of
the object. Concurrent requests are gathered into micro-batches in one worker thread (`tiers.batched`); a
stream is one chunk with the whole object, the usage chunk when asked for, then [DONE].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tiergate.data.dataset import context_text, input_text
from tiergate.tiers.batched import Answer, BatchedModelTier


class ExtractorTier(BatchedModelTier):
    kind = "extractor"
    what = "extractor"
    answers_json = True

    @property
    def fields(self) -> list[str]:
        return list(self._predictor.fields) if self._predictor is not None else []

    def _load_model(self) -> tuple[Any, Callable[[list[Any]], list[Any]]]:
        from tiergate.train.extractor_model import ExtractorPredictor

        predictor = ExtractorPredictor.load(self.config.model, self.config.device)
        return predictor, predictor.extract

    def _input(self, messages: list[dict[str, Any]]) -> Any:
        return context_text(messages), input_text(messages)

    def _answer(self, ext: Any) -> Answer:
        info = {"fields": {name: {"value": v.value, "confidence": v.confidence, "start": v.start, "end": v.end}
                           for name, v in ext.fields.items()},
                "confidence": ext.confidence}
        return Answer(ext.answer, ext.prompt_tokens, ext.completion_tokens, ext.confidence, info)
