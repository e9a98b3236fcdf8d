"""The `classifier` trainer: fine-tune an encoder with a linear head on labelled text, then calibrate.

    trainer = ClassifierTrainer()
    model = trainer.train(train_ds, eval_ds, "out/intents", ClassifierConfig(epochs=4))

The whole encoder is fine-tuned (AdamW, warmup then linear or cosine decay, optional layer-wise learning
rate decay) on length-bucketed batches. After training, a temperature is fitted on the validation data
(`eval_ds`, or `val_fraction` of the training data carved out stratified) so that the served confidence
means what it says; ECE before and after is reported. A checkpoint is written at each epoch's end (and every
`checkpoint_every` steps); a rerun with the same OUT resumes from it, with the same result as an
uninterrupted run. Batch order, initialisation and dropout all derive from `seed`.

`members=N` trains a deep ensemble: N such models with seeds seed..seed+N-1 in OUT/members/, served as their
mean probability under one temperature (`EnsemblePredictor`); better accuracy and confidence ranking (what a
cascade keeps) at N times the training and serving cost.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tiergate.data.dataset import Dataset
from tiergate.data.split import split_dataset
from tiergate.errors import ConfigError, DataError
from tiergate.train.base import TrainedModel, Trainer, finish_model_dir
from tiergate.train.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    separable_fit,
    softmax,
)
from tiergate.train.classifier_config import RUN_ONLY, ClassifierConfig
from tiergate.train.classifier_model import (
    ClassifierPredictor,
    EncoderClassifier,
    combine_logits,
    encode_logits,
    knn_log_probs,
    pad_batch,
    save_classifier,
)
from tiergate.train.loop import (
    StepHook,
    epoch_batches,
    lr_lambda,
    param_groups,
    peak_rss_mb,
    prepare_encoder,
    run_training,
)

if TYPE_CHECKING:
    from tiergate.train.lexical import LexicalModel

__all__ = ["ClassifierTrainer", "StepHook", "combine_classifiers", "epoch_batches", "lr_lambda", "param_groups", "peak_rss_mb",
           "score_logits"]


def score_logits(logits: np.ndarray, gold: list[int], temperature: float) -> dict[str, float]:
    from tiergate.evaluate.metrics import accuracy_score, macro_f1_score

    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    known = np.array([g >= 0 for g in gold])
    y = np.array(gold)
    out = {
        "accuracy": accuracy_score(y.tolist(), pred.tolist()),
        "macro_f1": macro_f1_score(y.tolist(), pred.tolist(), sorted({g for g in gold if g >= 0})),
        "ece": expected_calibration_error(probs.max(1), pred == y),
    }
    if known.any():
        out["nll"] = nll(logits[known], y[known], temperature)
    return out


def supervised_contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form): for each row that has another row of its
    label, minus the mean log-probability of those rows among every other row of the batch, by cosine similarity
    over `temperature`. Rows with a label of their own (outliers) are only negatives."""
    z = torch.nn.functional.normalize(emb, dim=-1)
    sims = (z @ z.T) / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sims = sims.masked_fill(self_mask, float("-inf"))
    log_prob = sims - torch.logsumexp(sims, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    anchors = count > 0
    if not anchors.any():
        return emb.sum() * 0.0
    mean_pos = log_prob.masked_fill(~positive, 0.0).sum(1)[anchors] / count[anchors]
    return -mean_pos.mean()


def calibrate(logits: np.ndarray, eval_y: list[int], lexical_logp: np.ndarray | None = None,
              lexical_weight: float | None = None) -> tuple[float, float, dict[str, Any], dict[str, Any]]:
    """Fit a temperature on validation logits, and with a lexical vote (`lexical_logp`) its weight too unless
    `lexical_weight` fixes it: (temperature, lexical weight (0 without a vote), the calibration record, metrics to
    add, `lexical_weight` among them when there is a vote)."""
    from tiergate.train.lexical import fit_blend

    temperature, weight = 1.0, 0.0
    if lexical_logp is not None:
        weight = lexical_weight if lexical_weight is not None else 0.5
    if not len(eval_y):
        record = {"lexical_weight": weight} if lexical_logp is not None else {}
        return temperature, weight, record, dict(record)
    known = [i for i, g in enumerate(eval_y) if g >= 0]
    y = [eval_y[i] for i in known]
    extra: dict[str, Any] = {}
    if lexical_logp is not None:
        if known:
            if lexical_weight is None and separable_fit(logits[known] + weight * lexical_logp[known], y):
                weight, temperature = fit_blend(logits[known], lexical_logp[known], y)
            else:
                temperature = fit_temperature(logits[known] + weight * lexical_logp[known], y)
            extra = {"val_accuracy_model_alone": score_logits(logits, eval_y, 1.0)["accuracy"],
                     "val_accuracy_lexical_alone": score_logits(lexical_logp, eval_y, 1.0)["accuracy"]}
        logits = logits + weight * lexical_logp
    elif known:
        temperature = fit_temperature(logits[known], y)
    before, after = score_logits(logits, eval_y, 1.0), score_logits(logits, eval_y, temperature)
    calibration = {"ece_before": before["ece"], "ece_after": after["ece"],
                   "nll_before": before.get("nll"), "nll_after": after.get("nll")}
    if known and not separable_fit(logits[known], y):  # (the blend's weight kept at its default too)
        calibration["temperature_fit"] = (f"skipped: no mistake among the {len(y)} validation examples to fit it "
                                          "on (temperature 1)")
        warnings.warn(f"the temperature was not fitted: the model gets all {len(y)} validation examples right, so "
                      "its confidences are uncalibrated; give more validation data (--eval or val_fraction)",
                      stacklevel=2)
    if lexical_logp is not None:
        calibration["lexical_weight"] = weight
        extra["lexical_weight"] = weight
    return temperature, weight, calibration, {**after, "ece_uncalibrated": before["ece"], **extra}


def check_eval_labels(train_labels: list[str], eval_ds: Dataset) -> None:
    """Validation examples whose label the training data never shows cannot be answered right: none known is
    an error (wrong file, or another label spelling); some unknown is warned about, with how many examples."""
    known = set(train_labels)
    counts = eval_ds.label_counts()
    unknown = sorted(label for label in counts if label not in known)
    if not unknown:
        return
    shown = ", ".join(repr(label) for label in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    if len(unknown) == len(counts):
        raise DataError(f"no validation label is a training label (validation labels: {shown}; training labels: "
                        f"{', '.join(sorted(known)[:10])}{' ...' if len(known) > 10 else ''})", path=eval_ds.path)
    n = sum(counts[label] for label in unknown)
    warnings.warn(f"{eval_ds.path}: {n} of {len(eval_ds)} validation examples have labels the training data does "
                  f"not have ({shown}); they count as wrong answers", stacklevel=3)


def split_outliers(ds: Dataset, label: str | None, required: bool = False) -> tuple[Dataset, list[str]]:
    """(the examples of every other label, the texts labelled `label`); `required`: a label no example carries is
    an error (a misspelt outlier label would silently train without outlier exposure)."""
    if label is None:
        return ds, []
    keep = [i for i, ex in enumerate(ds.examples) if str(ex.output) != label]
    outliers = [ex.text for ex in ds.examples if str(ex.output) == label]
    if required and not outliers:
        labels = ds.labels()
        raise DataError(f"outlier_label {label!r} labels no training example (labels: "
                        f"{', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})", path=ds.path)
    if required and not keep:
        raise DataError(f"every training example is labelled with the outlier label {label!r}", path=ds.path)
    return ds.subset(keep), outliers


def save_lexical(out: Path, lexical: LexicalModel | None) -> None:
    """Save the lexical vote in `out`, or remove one a former run left there."""
    from tiergate.train.lexical import LEXICAL_ARRAYS, LEXICAL_JSON

    if lexical is not None:
        lexical.save(out)
        return
    for name in (LEXICAL_JSON, LEXICAL_ARRAYS):
        (out / name).unlink(missing_ok=True)


def fit_lexical(config: ClassifierConfig, texts: list[str], labels: list[int]) -> LexicalModel | None:
    from tiergate.train.lexical import LexicalModel, LexicalOptions

    return LexicalModel.fit(texts, labels, LexicalOptions(c=config.lexical_c)) if config.lexical else None


def _assemble(dirs: list[Path], out: Path, config: ClassifierConfig, data_hash: str, eval_ds: Dataset | None,
              train_ds: Dataset | None, member_metrics: list[dict[str, Any]], started: float) -> TrainedModel:
    """Serve the classifiers in `dirs` as one ensemble in `out`: their mean probability, a lexical vote fitted on
    `train_ds` when the config asks for one, and one temperature fitted on `eval_ds`."""
    import os

    from tiergate.train.classifier_model import ENSEMBLE_FILE, EnsemblePredictor

    predictor = EnsemblePredictor([ClassifierPredictor.load(d, config.device) for d in dirs], 1.0)
    labels = predictor.labels
    index = {label: i for i, label in enumerate(labels)}
    lexical = (fit_lexical(config, train_ds.texts, [index[str(o)] for o in train_ds.outputs])
               if train_ds is not None else None)
    metrics_out: dict[str, Any] = {"train_examples": len(train_ds) if train_ds is not None else None,
                                   "eval_examples": len(eval_ds or []), "labels": len(labels),
                                   "members": member_metrics,
                                   "train_time_s": round(time.perf_counter() - started, 1)}
    eval_texts = eval_ds.texts if eval_ds is not None else []
    eval_y = [index.get(str(o), -1) for o in eval_ds.outputs] if eval_ds is not None else []
    temperature, weight, calibration, scored = calibrate(
        predictor.logits(eval_texts, config.inference_batch_size) if eval_texts else np.zeros((0, len(labels))),
        eval_y,
        lexical.log_proba(eval_texts, len(labels)) if lexical is not None else None, config.lexical_weight)
    metrics_out.update(scored)
    metrics_out["temperature"] = temperature
    out.mkdir(parents=True, exist_ok=True)
    save_lexical(out, lexical)
    metrics_out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    (out / ENSEMBLE_FILE).write_text(json.dumps(
        {"members": [os.path.relpath(d, out) for d in dirs], "temperature": temperature,
         "lexical_weight": weight, **calibration},
        indent=2) + "\n")
    return finish_model_dir(out, kind="classifier", tier_kind="classifier", task="classification", config=config,
                            data_hash=data_hash, eval_ds=eval_ds, metrics=metrics_out,
                            manifest_skips=("members",))


def combine_classifiers(member_dirs: list[str | Path], eval_ds: Dataset, out: str | Path,
                        device: str = "auto") -> TrainedModel:
    """One ensemble from classifiers already trained, alike or not (other seeds, other options such as
    `contrastive_weight`), on the same label set: served as their mean probability under one temperature fitted
    on `eval_ds`, which the members did not train on. `out` refers to the members by relative path and keeps
    none of their weights. The manifest carries the first member's options and training-data hash; the metrics
    list each member's."""
    import dataclasses

    from tiergate.train.manifest import read_manifest

    started = time.perf_counter()
    dirs = [Path(d).resolve() for d in member_dirs]
    if len(dirs) < 2:
        raise ConfigError("an ensemble needs at least two classifiers")
    manifests = [read_manifest(d) for d in dirs]
    for d, m in zip(dirs, manifests, strict=True):
        if m.get("kind") != "classifier":
            raise ConfigError(f"{d} is a {m.get('kind')!r} model, not a classifier")
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
    first = {k: v for k, v in manifests[0].get("config", {}).items() if k in fields}
    config = dataclasses.replace(ClassifierConfig(**first), members=len(dirs), lexical=False, device=device)
    eval_ds = split_outliers(eval_ds, config.outlier_label)[0]
    members = [{"dir": str(d), "data_hash": m.get("data_hash"), "accuracy": m.get("metrics", {}).get("accuracy"),
                "config": m.get("config")} for d, m in zip(dirs, manifests, strict=True)]
    return _assemble(dirs, Path(out), config, str(manifests[0].get("data_hash")), eval_ds, None, members, started)


class ClassifierTrainer(Trainer[ClassifierConfig]):
    name = "classifier"
    tasks = ("classification",)
    config_class = ClassifierConfig

    def __init__(self, on_step: StepHook | None = None) -> None:
        self.on_step = on_step
        """Called after each optimizer step with (step, loss); raising in it stops training (tests use it to
        simulate an interruption)."""

    def train(self, train_ds: Dataset, eval_ds: Dataset | None, out_dir: str | Path,
              config: ClassifierConfig) -> TrainedModel:
        started = time.perf_counter()
        out = Path(out_dir)
        self.check_task(train_ds.validate())
        data_hash = train_ds.data_hash()  # of the data as given, before a validation share is carved out
        if eval_ds is None and config.val_fraction > 0:
            carved = split_dataset(train_ds, val=config.val_fraction, test=0.0, seed=config.seed)
            train_ds, eval_ds = carved.train, carved.validation
        if eval_ds is not None:
            self.check_task(eval_ds)
            eval_ds = split_outliers(eval_ds, config.outlier_label)[0]  # outliers are not scored as a class
            check_eval_labels(split_outliers(train_ds, config.outlier_label)[0].labels(), eval_ds)
        if config.members > 1:
            return self._train_ensemble(train_ds, eval_ds, out, config, data_hash, started)
        train_ds, outliers = split_outliers(train_ds, config.outlier_label, required=True)
        labels = train_ds.labels()
        index = {label: i for i, label in enumerate(labels)}
        model, tokenizer, device = prepare_encoder(
            config, lambda encoder: EncoderClassifier(encoder, len(labels), config.pooling, config.dropout))
        pad_id = tokenizer.pad_token_id or 0

        def tok(texts: list[str]) -> list[list[int]]:
            return tokenizer(texts, truncation=True, max_length=config.max_seq_len)["input_ids"]  # type: ignore[no-any-return]

        train_ids = tok(train_ds.texts)
        train_y = torch.tensor([index[str(o)] for o in train_ds.outputs], dtype=torch.long)
        eval_ids = tok(eval_ds.texts) if eval_ds is not None and len(eval_ds) else []
        eval_y = [index.get(str(o), -1) for o in eval_ds.outputs] if eval_ds is not None else []
        identity = {**config.identity(), "data_hash": data_hash}
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        outlier_ids = tok(outliers) if outliers else []

        def loss_of(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
            """Cross-entropy on the batch's labelled rows; outlier exposure on the rows after them."""
            n = len(gold)
            loss = loss_fn(logits[:n], gold)
            if len(logits) > n:  # cross-entropy to the uniform distribution over the classes
                rest = logits[n:]
                loss = loss + config.outlier_weight * (torch.logsumexp(rest, -1) - rest.mean(-1)).mean()
            return loss  # type: ignore[no-any-return]

        by_label = ([np.flatnonzero(train_y.numpy() == c) for c in range(len(labels))]
                    if config.contrastive_weight > 0 else [])  # the partners' pool per label

        def batch_loss(batch: list[int]) -> torch.Tensor:
            if config.contrastive_weight > 0:  # a partner of the same label for each row (a pure function of the batch)
                pick = np.random.default_rng([config.seed, 1, *batch])
                batch = batch + [int(pick.choice(by_label[int(train_y[i])])) for i in batch]
            rows = [train_ids[i] for i in batch]
            if outlier_ids:  # a pure function of the batch, so a resumed run draws the same outliers
                draw = np.random.default_rng([config.seed, *batch]).integers(len(outlier_ids), size=config.outlier_batch)
                rows += [outlier_ids[j] for j in draw]
            input_ids, mask = pad_batch(rows, pad_id)
            gold = train_y[batch].to(device)
            if config.contrastive_weight > 0:
                emb = model.embed(input_ids.to(device), mask.to(device))
                ids = torch.cat([gold, -1 - torch.arange(len(rows) - len(batch), device=device)])
                return (loss_of(model.head(model.dropout(emb)), gold)
                        + config.contrastive_weight
                        * supervised_contrastive_loss(emb, ids, config.contrastive_temperature))
            if config.rdrop_alpha <= 0:
                return loss_of(model(input_ids.to(device), mask.to(device)), gold)
            # R-Drop: the batch twice through dropout; the loss on both and a symmetric KL between them
            first, second = model(input_ids.repeat(2, 1).to(device), mask.repeat(2, 1).to(device)).chunk(2)
            lp, lq = first[:len(batch)].log_softmax(-1), second[:len(batch)].log_softmax(-1)
            kl = (torch.nn.functional.kl_div(lp, lq, log_target=True, reduction="batchmean")
                  + torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="batchmean")) / 2
            return (loss_of(first, gold) + loss_of(second, gold)) / 2 + config.rdrop_alpha * kl

        def evaluate() -> dict[str, Any]:
            ev, _ = encode_logits(model, eval_ids, pad_id, config.inference_batch_size, device)
            return {"val_accuracy": score_logits(ev, eval_y, 1.0)["accuracy"]}

        history, train_time = run_training(model, config, out, lengths=[len(x) for x in train_ids],
                                           identity=identity, batch_loss=batch_loss,
                                           evaluate=evaluate if eval_ids else None, started=started,
                                           on_step=self.on_step)
        return self._finish(out, model, tokenizer, labels, config, train_ds, eval_ds, train_ids, eval_ids, eval_y,
                            history, train_time, device, data_hash)

    def _train_ensemble(self, train_ds: Dataset, eval_ds: Dataset | None, out: Path, config: ClassifierConfig,
                        data_hash: str, started: float) -> TrainedModel:
        """`members` models alike but for the seed, each in OUT/members/mI (a finished member with the same
        options and data is kept, so an interrupted ensemble resumes), on the same validation data; then one
        temperature for their mean probability."""
        import dataclasses

        from tiergate.train.manifest import is_model_dir, read_manifest

        dirs, member_metrics = [], []
        for i in range(config.members):
            member_dir = out / "members" / f"m{i}"
            member_cfg = dataclasses.replace(config, members=1, seed=config.seed + i, val_fraction=0.0, lexical=False)
            manifest = read_manifest(member_dir) if is_model_dir(member_dir) else {}
            done = (manifest.get("data_hash") == train_ds.data_hash()
                    and {k: v for k, v in manifest.get("config", {}).items() if k not in RUN_ONLY}
                    == member_cfg.identity())
            model = None if done else self.train(train_ds, eval_ds, member_dir, member_cfg)
            metrics = model.metrics if model is not None else json.loads((member_dir / "metrics.json").read_text())
            member_metrics.append({"seed": member_cfg.seed, "accuracy": metrics.get("accuracy"),
                                   "train_time_s": metrics.get("train_time_s"), "reused": done})
            dirs.append(member_dir)
        train_ds = split_outliers(train_ds, config.outlier_label)[0]  # the members trained on the outliers
        return _assemble(dirs, out, config, data_hash, eval_ds, train_ds, member_metrics, started)

    def _finish(self, out: Path, model: EncoderClassifier, tokenizer: Any, labels: list[str], config: ClassifierConfig,
                train_ds: Dataset, eval_ds: Dataset | None, train_ids: list[list[int]], eval_ids: list[list[int]],
                eval_y: list[int], history: list[dict[str, Any]], train_time: float,
                device: torch.device, data_hash: str) -> TrainedModel:
        pad_id = tokenizer.pad_token_id or 0
        bank = None
        if config.knn_weight > 0:
            _, emb = encode_logits(model, train_ids, pad_id, config.inference_batch_size, device)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            bank = (emb.astype(np.float32), np.array([labels.index(str(o)) for o in train_ds.outputs]))
        metrics: dict[str, Any] = {"train_examples": len(train_ids), "eval_examples": len(eval_ids),
                                   "labels": len(labels), "steps": history[-1]["step"] if history else None,
                                   "train_time_s": round(train_time, 1)}
        index = {label: i for i, label in enumerate(labels)}
        lexical = fit_lexical(config, train_ds.texts, [index[str(o)] for o in train_ds.outputs])
        eval_texts = eval_ds.texts if eval_ids and eval_ds is not None else []
        logits = np.zeros((0, len(labels)))
        if eval_ids:
            head_logits, emb = encode_logits(model, eval_ids, pad_id, config.inference_batch_size, device)
            knn_logp = (knn_log_probs(emb, bank[0], bank[1], len(labels), config.knn_k) if bank is not None else None)
            logits = combine_logits(head_logits, knn_logp, config.knn_weight)
        temperature, weight, calibration, scored = calibrate(
            logits, eval_y if eval_ids else [],
            lexical.log_proba(eval_texts, len(labels)) if lexical is not None else None, config.lexical_weight)
        metrics.update(scored)
        metrics["temperature"] = temperature
        metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
        metrics["history"] = history
        settings = {"pooling": config.pooling, "max_seq_len": config.max_seq_len, "knn_weight": config.knn_weight,
                    "knn_k": config.knn_k, "lexical_weight": weight}
        save_classifier(out, model, tokenizer, labels, settings, temperature, calibration, bank)
        save_lexical(out, lexical)
        return finish_model_dir(out, kind="classifier", tier_kind="classifier", task="classification", config=config,
                                data_hash=data_hash, eval_ds=eval_ds, metrics=metrics,
                                clean_checkpoints=config.clean_checkpoints)
