"""File-level helpers behind the router commands: fit a boundary from dataset files, calibrate a cascade on a
trained classifier and labelled validation data.

    model = fit_boundary_from_files("train.csv", "val.csv", classifier="models/intents")
    calibrate_cascade_from_files("models/intents", "val.csv", target_accuracy=0.99)   # {"threshold": ..., ...}
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from tiergate.errors import ConfigError

if TYPE_CHECKING:
    from tiergate.routing.boundary import BoundaryFitOptions


def _read(path: str, text_column: str | None, label_column: str | None) -> Any:
    from tiergate.data import read_dataset

    return read_dataset(path, task="classification", text_column=text_column, label_column=label_column)


def classifier_data_hash(classifier: str) -> str | None:
    from tiergate.train.manifest import is_model_dir, read_manifest

    return read_manifest(classifier).get("data_hash") if is_model_dir(classifier) else None


def fit_boundary_from_files(data: str, val: str, *, classifier: str | None = None, oos: str | None = None,
                            oos_label: str = "oos", options: BoundaryFitOptions | None = None,
                            text_column: str | None = None, label_column: str | None = None,
                            device: str = "cpu") -> Any:
    """Fit a boundary on a training file; rows of `val` labelled `oos_label` (and `oos`) are out-of-scope
    examples, the rest in-scope validation. Records whether the training file is the classifier's own
    training data (the manifest's data hash)."""
    from tiergate.routing.boundary import BoundaryFitOptions, fit_boundary

    train_ds = _read(data, text_column, label_column)
    val_ds = _read(val, text_column, label_column)
    train = [(t, str(o)) for t, o in zip(train_ds.texts, train_ds.outputs, strict=True) if str(o) != oos_label]
    val_in = [t for t, o in zip(val_ds.texts, val_ds.outputs, strict=True) if str(o) != oos_label]
    oos_texts = [t for t, o in zip(val_ds.texts, val_ds.outputs, strict=True) if str(o) == oos_label]
    if oos is not None:
        from tiergate.data import read_texts

        oos_texts += read_texts(oos, text_column=text_column)
    opts = options or BoundaryFitOptions()
    model = fit_boundary([t for t, _ in train], val_in, opts, train_labels=[lab for _, lab in train],
                         classifier=classifier, oos_texts=oos_texts or None,
                         device=device)
    expected = classifier_data_hash(classifier) if classifier else None
    model.meta["train_data_hash"] = train_ds.data_hash()
    if expected is not None:
        model.meta["classifier_data_hash"] = expected
        model.meta["train_data_matches_classifier"] = expected == train_ds.data_hash()
        if expected != train_ds.data_hash():
            warnings.warn(f"{data} is not the data {classifier} was trained on (data hash differs); the boundary "
                          "describes this file's distribution", stacklevel=2)
    return model


def classifier_predictions(classifier: str, texts: list[str], device: str = "cpu") -> tuple[list[str], np.ndarray]:
    """(predicted labels, calibrated confidences) of a trained classifier."""
    from tiergate.train.classifier_model import ClassifierPredictor

    predictor = ClassifierPredictor.load(classifier, device)
    probs = predictor.predict_proba(texts)
    return [predictor.labels[i] for i in probs.argmax(1)], probs.max(1)


def calibrate_cascade(confidence: Any, correct: Any, *, target_accuracy: float | None = None,
                      keep_share: float | None = None) -> dict[str, Any]:
    """The cascade threshold on validation answers: the most kept at `target_accuracy` on what is kept, or the
    threshold keeping `keep_share`."""
    from tiergate.routing.calibration import threshold_for_keep_share
    from tiergate.routing.evaluation import cascade_report

    if (target_accuracy is None) == (keep_share is None):
        raise ConfigError("give one of target_accuracy and keep_share")
    if target_accuracy is not None:
        report = cascade_report(confidence, correct, target_accuracy=target_accuracy)
        threshold = report["best_on_this_data"]["threshold"]
    else:
        assert keep_share is not None
        threshold = threshold_for_keep_share(confidence, keep_share)
        report = cascade_report(confidence, correct)
    report.update(cascade_report(confidence, correct, threshold=threshold))
    return {"kind": "cascade", "threshold": float(threshold), "target_accuracy": target_accuracy,
            "keep_share": keep_share, "validation": report["at_threshold"], "n": report["n"],
            "accuracy_all": report["accuracy_all"], "curve": report["curve"]}


def calibrate_cascade_from_files(classifier: str, data: str, *, target_accuracy: float | None = None,
                                 keep_share: float | None = None, text_column: str | None = None,
                                 label_column: str | None = None) -> dict[str, Any]:
    ds = _read(data, text_column, label_column)
    pred, conf = classifier_predictions(classifier, ds.texts)
    correct = np.array([p == str(o) for p, o in zip(pred, ds.outputs, strict=True)])
    result = calibrate_cascade(conf, correct, target_accuracy=target_accuracy, keep_share=keep_share)
    result.update(classifier=classifier, data=data)
    return result
