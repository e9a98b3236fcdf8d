"""Option values the lora (and extractor) trainer must refuse up front, as a one-line ConfigError naming the
option (no model is loaded): `--set epochs=nan` used to end in a traceback, `learning_rate=inf` in minutes of
NaN training."""

from __future__ import annotations

import pytest

from tiergate.errors import ConfigError
from tiergate.train import get_trainer


@pytest.mark.parametrize(("key", "value"), [
    ("epochs", "nan"), ("epochs", "inf"), ("learning_rate", "nan"), ("learning_rate", "inf"),
    ("weight_decay", "nan"), ("weight_decay", "-0.1"), ("max_grad_norm", "nan"), ("max_grad_norm", "-1"),
    ("max_grad_norm", "inf"), ("warmup_ratio", "nan"), ("lora_dropout", "nan"), ("val_fraction", "nan"),
])
def test_non_finite_or_negative_values_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^lora trainer: {key} "):
        get_trainer("lora").make_config({key: value})


def test_finite_values_still_pass() -> None:
    config = get_trainer("lora").make_config({"epochs": "0.5", "learning_rate": "1e-3", "weight_decay": "0",
                                              "max_grad_norm": "0", "warmup_ratio": "0.1"})
    assert (config.epochs, config.learning_rate, config.max_grad_norm) == (0.5, 1e-3, 0.0)


@pytest.mark.parametrize(("key", "value"), [("epochs", "nan"), ("epochs", "inf"), ("learning_rate", "nan"),
                                            ("head_learning_rate", "inf"), ("weight_decay", "nan"),
                                            ("max_grad_norm", "nan"), ("layer_lr_decay", "nan")])
@pytest.mark.parametrize("trainer", ["extractor", "classifier"])
def test_the_encoder_trainers_refuse_non_finite_values(trainer: str, key: str, value: str) -> None:
    """`tiergate train extractor --set epochs=nan` ended in a traceback; `learning_rate=nan` saved a NaN model;
    `tiergate train classifier --set epochs=inf` ended in an OverflowError traceback (the check is shared)."""
    with pytest.raises(ConfigError, match=f"^{trainer} trainer: {key} must be a finite number"):
        get_trainer(trainer).make_config({key: value})
    get_trainer(trainer).make_config({key: "0.5"})


def test_set_without_a_key_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from tiergate.cli import main

    monkeypatch.setattr(sys, "argv", ["tiergate", "train", "classifier", "--train", "x.jsonl", "--out", "o",
                                      "--set", "=4"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "--set '=4': expected key=value" in capsys.readouterr().err
