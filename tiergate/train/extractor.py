"""The `extractor` trainer: fine-tune an encoder to tag the spans of named fields in the input (span extraction).

    trainer = ExtractorTrainer()
    model = trainer.train(train_ds, eval_ds, "out/booking", trainer.make_config({"epochs": 5}))

Training data is an extraction dataset: outputs are JSON objects {field: value} whose values are written in the
input. Each token of the user text gets O/B/I tags for every field (`tiergate.train.extractor_data`); a chat
input's system messages (e.g. "requested slots: time") are encoded as the first segment of a text pair, so
the same "13" can be a time or a number of people. Values that are not in the text are skipped and counted.
The whole encoder and a linear tagging head are fine-tuned with the classifier's loop (`tiergate.train.loop`:
AdamW, warmup then decay, length-bucketed batches, checkpoints at each epoch's end and every
`checkpoint_every` steps, deterministic for a seed, resumable). A temperature for the tag probabilities is then
fitted on the validation data (`eval_ds`, or `val_fraction` of the training data carved out stratified by
which fields an example has), so that each extracted field's confidence (the mean probability of its tags)
and the answer's confidence mean what they say.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiergate.data.dataset import Dataset
from tiergate.data.split import split_dataset
from tiergate.errors import DataError
from tiergate.train.base import TrainedModel, Trainer, finish_model_dir
from tiergate.train.calibration import expected_calibration_error, fit_temperature, nll
from tiergate.train.extractor_config import ExtractorConfig
from tiergate.train.extractor_data import (
    IGNORE,
    Encoded,
    EncodingStats,
    answer_json,
    decode_fields,
    encode_dataset,
    field_names,
    field_signature,
)
from tiergate.train.extractor_model import EncoderTagger, collate, save_extractor, tag_logits, tag_probs
from tiergate.train.loop import StepHook, peak_rss_mb, prepare_encoder, run_training


def score_extractions(encoded: list[Encoded], logits: list[np.ndarray], golds: list[Any], fields: list[str],
                      temperature: float) -> dict[str, Any]:
    """Span precision / recall / F1 (values compared exactly), per field, exact match and the answer ECE."""
    from tiergate.evaluate.text_metrics import exact_fields, field_counts, prf_table

    preds, confidences = [], []
    for enc, lg in zip(encoded, logits, strict=True):
        spans, confidence = decode_fields(tag_probs(lg, temperature), enc, fields)
        preds.append(json.loads(answer_json(spans, fields)))
        confidences.append(confidence)
    golds = [g if isinstance(g, dict) else {} for g in golds]
    micro, per_field = prf_table(field_counts(golds, preds, exact=True))
    hits = [exact_fields(g) == exact_fields(p) for g, p in zip(golds, preds, strict=True)]
    return {"span_precision": micro["precision"], "span_recall": micro["recall"], "span_f1": micro["f1"],
            "per_field_span": per_field, "exact_match": float(np.mean(hits)) if hits else 0.0,
            "ece": expected_calibration_error(confidences, hits)}


def token_logits(encoded: list[Encoded], logits: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The tagged (user-token, field) rows: logits [n, 3] and gold tags [n], for temperature fitting."""
    rows, gold = [], []
    for enc, lg in zip(encoded, logits, strict=True):
        tags = np.asarray(enc.tags, dtype=np.int64)
        keep = tags != IGNORE
        rows.append(lg[keep])
        gold.append(tags[keep])
    if not rows:
        return np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(gold)


class ExtractorTrainer(Trainer[ExtractorConfig]):
    name = "extractor"
    tasks = ("extraction",)
    config_class = ExtractorConfig

    def __init__(self, on_step: StepHook | None = None) -> None:
        self.on_step = on_step
        """Called after each optimizer step with (step, loss); raising in it stops training."""

    def train(self, train_ds: Dataset, eval_ds: Dataset | None, out_dir: str | Path,
              config: ExtractorConfig) -> TrainedModel:
        started = time.perf_counter()
        out = Path(out_dir)
        self.check_task(train_ds.validate())
        data_hash = train_ds.data_hash()  # of the data as given, before a validation share is carved out
        if eval_ds is None and config.val_fraction > 0:
            carved = split_dataset(train_ds, val=config.val_fraction, test=0.0, seed=config.seed,
                                   stratify_by=field_signature)
            train_ds, eval_ds = carved.train, carved.validation
        if eval_ds is not None:
            self.check_task(eval_ds.validate() if len(eval_ds) else eval_ds)
        fields = field_names(train_ds)
        if not fields:
            raise DataError("no field values to learn: every training output is empty", path=train_ds.path)
        model, tokenizer, device = prepare_encoder(config, lambda encoder: EncoderTagger(encoder, len(fields),
                                                                                      config.dropout))
        pad_id = tokenizer.pad_token_id or 0

        train_enc, train_stats = encode_dataset(tokenizer, train_ds, fields, config.max_seq_len, config.use_context)
        if not train_stats.tagged:
            raise DataError(f"none of the {train_stats.values} field values occurs in its input text "
                            f"({train_stats.values_not_in_text} not found, {train_stats.values_not_text} not text)",
                            path=train_ds.path)
        eval_enc, eval_stats = (encode_dataset(tokenizer, eval_ds, fields, config.max_seq_len, config.use_context)
                                if eval_ds is not None and len(eval_ds) else ([], EncodingStats()))
        eval_golds = eval_ds.outputs if eval_ds is not None else []
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)

        def batch_loss(batch: list[int]) -> torch.Tensor:
            input_ids, mask, types, tags = collate([train_enc[i] for i in batch], pad_id, device, with_tags=True)
            assert tags is not None
            return loss_fn(model(input_ids, mask, types).reshape(-1, 3), tags.reshape(-1))  # type: ignore[no-any-return]

        def evaluate() -> dict[str, Any]:
            logits = tag_logits(model, eval_enc, pad_id, config.inference_batch_size, device)
            return {"val_span_f1": score_extractions(eval_enc, logits, eval_golds, fields, 1.0)["span_f1"]}

        identity = {**config.identity(), "data_hash": data_hash}
        history, train_time = run_training(model, config, out, lengths=[len(e.input_ids) for e in train_enc],
                                           identity=identity, batch_loss=batch_loss,
                                           evaluate=evaluate if eval_enc else None, started=started,
                                           on_step=self.on_step)

        metrics: dict[str, Any] = {"train_examples": len(train_enc), "eval_examples": len(eval_enc),
                                   "fields": fields, "steps": history[-1]["step"] if history else None,
                                   "train_time_s": round(train_time, 1),
                                   "encoding_train": train_stats.to_json(), "encoding_eval": eval_stats.to_json()}
        temperature, calibration = 1.0, {}
        if eval_enc:
            logits = tag_logits(model, eval_enc, pad_id, config.inference_batch_size, device)
            rows, gold = token_logits(eval_enc, logits)
            if len(gold):
                temperature = fit_temperature(rows, gold)
            before = score_extractions(eval_enc, logits, eval_golds, fields, 1.0)
            after = score_extractions(eval_enc, logits, eval_golds, fields, temperature)
            calibration = {"ece_before": before["ece"], "ece_after": after["ece"],
                           "token_nll_before": nll(rows, gold, 1.0) if len(gold) else None,
                           "token_nll_after": nll(rows, gold, temperature) if len(gold) else None}
            metrics.update(after)
            metrics["ece_uncalibrated"] = before["ece"]
        metrics["temperature"] = temperature
        metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
        metrics["history"] = history
        settings = {"max_seq_len": config.max_seq_len, "use_context": config.use_context}
        save_extractor(out, model, tokenizer, fields, settings, temperature, calibration)
        return finish_model_dir(out, kind="extractor", tier_kind="extractor", task="extraction", config=config,
                                data_hash=data_hash, eval_ds=eval_ds, metrics=metrics,
                                clean_checkpoints=config.clean_checkpoints)
