"""Trainers and the model registry.

    from tiergate.train import get_trainer, ModelRegistry
    trainer = get_trainer("classifier")
    model = trainer.train(train_ds, eval_ds, "models/triage", trainer.make_config({"epochs": 4}))
    ModelRegistry().register(model, name="triage")          # version, data hash, config, metrics, path

Trainers (registered by name in `tiergate.train.registry`; each writes an artifact directory with a
`tiergate-model.json` manifest, resumes from checkpoints and is deterministic for a seed):
- `classifier`: fine-tunes an encoder (bundled MiniLM by default) with a classification head, then
  calibrates its probabilities on validation data with temperature scaling.
- `extractor`: fine-tunes an encoder as a per-field BIO token tagger for extraction data (span extraction),
  served by an `extractor` tier; values are exact substrings of the input, each with a confidence.
- `lora`: supervised fine-tuning of a causal LM (bundled SmolLM2 by default) with a PEFT LoRA adapter, for
  extraction, generation and classification data; the adapter is served by a `local_lm` tier.
Importing this package loads no torch; the trainer module does, when it is asked for.
"""

from tiergate.train.base import TrainedModel, Trainer
from tiergate.train.models import ModelRecord, ModelRegistry, default_registry_dir
from tiergate.train.registry import get_trainer, register_trainer, trainer_names, unregister_trainer

__all__ = [
    "Trainer", "TrainedModel", "ModelRecord", "ModelRegistry", "default_registry_dir",
    "get_trainer", "register_trainer", "trainer_names", "unregister_trainer",
]
