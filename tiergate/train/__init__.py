"""Trainers and the model registry.

    from tiergate.train import get_trainer, ModelRegistry
    trainer = get_trainer("classifier")
    model = trainer.train(train_ds, eval_ds, "models/triage", trainer.make_config({"epochs": 4}))
    ModelRegistry().register(model, name="triage")          # version, data hash, config, metrics, path

Trainers (registered by name in `tiergate.train.registry`; each writes an artifact directory with a
`tiergate-model.json` manifest, resumes from checkpoints and is deterministic for a seed):
- `classifier`: fine-tunes an encoder (bundled MiniLM by default) with a classification head, then
  calibrates its probabilities on validation data with temperature scaling.
Importing this package loads no torch; the trainer module does, when it is asked for.
"""

from tiergate.train.base import TrainedModel, Trainer
from tiergate.train.models import ModelRecord, ModelRegistry, default_registry_dir
from tiergate.train.registry import get_trainer, register_trainer, trainer_names, unregister_trainer

__all__ = [
    "Trainer", "TrainedModel", "ModelRecord", "ModelRegistry", "default_registry_dir",
    "get_trainer", "register_trainer", "trainer_names", "unregister_trainer",
]
