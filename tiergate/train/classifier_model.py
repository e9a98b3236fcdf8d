"""The fine-tuned encoder classifier: the torch module, its artifact layout and the predictor that serves it.

Artifact directory (written by `save_classifier`, read by `ClassifierPredictor.load`):

    encoder/                  Hugging Face encoder weights, config and tokenizer (save_pretrained)
    head.safetensors          the linear head (weight [labels, hidden], bias [labels])
    knn.safetensors           normalised training embeddings and their label ids (only when knn_weight > 0)
    labels.json               label names, index = class id
    lexical.json, lexical.safetensors
                              the lexical vote (tiergate.train.lexical), when lexical_weight > 0
    classifier.json           pooling, max_seq_len, knn_weight, knn_k, lexical_weight
    calibration.json          temperature, ECE before and after
    metrics.json              validation metrics and per-epoch history
    tiergate-model.json       the manifest (tiergate.train.manifest)

Importing this module imports torch; the tier and the trainer import it only when they need it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tiergate.errors import ConfigError, NotFound
from tiergate.tiers.hf import serialized

if TYPE_CHECKING:
    from tiergate.train.lexical import LexicalModel


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EncoderClassifier(nn.Module):
    """An encoder, a pooling step and a linear head."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))  # type: ignore[no-any-return]


@serialized
def load_encoder(name: str) -> tuple[nn.Module, Any]:
    """(encoder, tokenizer) for the bundled MiniLM, a Hugging Face id or a local directory."""
    from transformers import AutoModel, AutoTokenizer

    from tiergate.bundled import encoder_path

    path = encoder_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load encoder {name!r} ({exc})") from exc
    return encoder, tokenizer


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


@torch.inference_mode()
def encode_logits(model: EncoderClassifier, ids: list[list[int]], pad_id: int, batch_size: int,
                  device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pooled embeddings) for pre-tokenised inputs, in input order; batches by length."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    logits = np.zeros((len(ids), model.head.out_features), dtype=np.float32)
    embs = np.zeros((len(ids), model.head.in_features), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in chunk], pad_id)
        emb = model.embed(input_ids.to(device), mask.to(device))
        logits[chunk] = model.head(emb).float().cpu().numpy()
        embs[chunk] = emb.float().cpu().numpy()
    model.train(was_training)
    return logits, embs


def knn_log_probs(query: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, num_labels: int, k: int,
                  temperature: float = 0.05) -> np.ndarray:
    """log p(label) from a similarity-weighted vote of the k nearest (cosine) training embeddings."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    sims = q @ bank.T
    k = min(k, bank.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    out = np.full((len(q), num_labels), 1e-4, dtype=np.float64)
    rows = np.arange(len(q))[:, None]
    weights = np.exp((sims[rows, top] - 1.0) / temperature)
    np.add.at(out, (np.repeat(rows, k, axis=1), bank_labels[top]), weights)
    out /= out.sum(axis=1, keepdims=True)
    return np.log(out)  # type: ignore[no-any-return]


def combine_logits(head_logits: np.ndarray, knn_logp: np.ndarray | None, knn_weight: float) -> np.ndarray:
    if knn_logp is None or knn_weight <= 0:
        return head_logits
    return head_logits + knn_weight * knn_logp  # type: ignore[no-any-return]


def energy(logits: np.ndarray, temperature: float) -> np.ndarray:
    """-logsumexp of the calibrated logits, per row (Liu et al. 2020): lower where the model has more evidence."""
    from scipy.special import logsumexp

    return -logsumexp(np.asarray(logits / temperature, dtype=np.float64), axis=1)  # type: ignore[no-any-return]


def save_classifier(out: Path, model: EncoderClassifier, tokenizer: Any, labels: list[str], settings: dict[str, Any],
                    temperature: float, calibration: dict[str, Any], knn_bank: tuple[np.ndarray, np.ndarray] | None) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out / "encoder")  # type: ignore[operator]
    tokenizer.save_pretrained(out / "encoder")
    head = {"weight": model.head.weight.detach().cpu().contiguous(), "bias": model.head.bias.detach().cpu().contiguous()}
    save_file(head, str(out / "head.safetensors"))
    if knn_bank is not None:
        save_file({"embeddings": torch.from_numpy(knn_bank[0]).contiguous(),
                   "labels": torch.from_numpy(knn_bank[1].astype(np.int64))}, str(out / "knn.safetensors"))
    (out / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n")
    (out / "classifier.json").write_text(json.dumps(settings, indent=2) + "\n")
    (out / "calibration.json").write_text(json.dumps({"temperature": temperature, **calibration}, indent=2) + "\n")


@dataclass
class Prediction:
    label: str
    confidence: float
    top: list[tuple[str, float]]
    prompt_tokens: int


class ClassifierPredictor:
    """A saved classifier, ready to predict calibrated label probabilities. Not thread-safe: one caller
    at a time (the classifier tier serialises calls through its batching thread)."""

    def __init__(self, model: EncoderClassifier, tokenizer: Any, labels: list[str], settings: dict[str, Any],
                 temperature: float, knn_bank: tuple[np.ndarray, np.ndarray] | None, device: torch.device,
                 lexical: tuple[LexicalModel, float] | None = None) -> None:
        self.model = model.to(device).eval()
        self.lexical = lexical
        """(the lexical vote, its weight), blended into the logits when present"""
        self.tokenizer = tokenizer
        self.labels = labels
        self.settings = settings
        self.temperature = temperature
        self.knn_bank = knn_bank
        self.device = device
        self.max_seq_len = int(settings.get("max_seq_len", 128))

    @classmethod
    @serialized  # the transformers imports too: their lazy first resolution races other loading threads
    def load(cls, model_dir: str | Path, device: str = "auto") -> ClassifierPredictor:
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        d = Path(model_dir)
        if (d / ENSEMBLE_FILE).is_file():
            return EnsemblePredictor.load_ensemble(d, device)
        if not (d / "head.safetensors").is_file():
            raise NotFound(f"{d}: not a tiergate classifier (no head.safetensors)")
        labels = json.loads((d / "labels.json").read_text())
        settings = json.loads((d / "classifier.json").read_text())
        calibration = json.loads((d / "calibration.json").read_text())
        encoder = AutoModel.from_pretrained(str(d / "encoder"))
        tokenizer = AutoTokenizer.from_pretrained(str(d / "encoder"))
        model = EncoderClassifier(encoder, len(labels), settings.get("pooling", "mean"), 0.0)
        head = load_file(str(d / "head.safetensors"))
        model.head.load_state_dict(head)
        knn = None
        if (d / "knn.safetensors").is_file():
            bank = load_file(str(d / "knn.safetensors"))
            knn = (bank["embeddings"].numpy(), bank["labels"].numpy())
        return cls(model, tokenizer, labels, settings, float(calibration.get("temperature", 1.0)), knn,
                   resolve_device(device), load_lexical(d, float(settings.get("lexical_weight", 0.0))))

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_seq_len)["input_ids"]  # type: ignore[no-any-return]

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Uncalibrated logits (head, blended with the kNN and lexical votes when the model has them)."""
        return self._logits(texts, self.tokenize(texts), batch_size)

    def _logits(self, texts: list[str], ids: list[list[int]], batch_size: int) -> np.ndarray:
        return self.add_lexical(texts, self._model_logits(texts, ids, batch_size))

    def _model_logits(self, texts: list[str], ids: list[list[int]], batch_size: int) -> np.ndarray:
        head_logits, emb = encode_logits(self.model, ids, self.tokenizer.pad_token_id or 0, batch_size, self.device)
        return self.add_knn(head_logits, emb)

    def logits_and_embeddings(self, texts: list[str], ids: list[list[int]],
                              batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(the served logits before the temperature, the pooled embeddings of `model`) from one forward pass of
        `model`: what the boundary router reads."""
        head_logits, emb = encode_logits(self.model, ids, self.tokenizer.pad_token_id or 0, batch_size, self.device)
        return self.add_lexical(texts, self.add_knn(head_logits, emb)), emb

    def boundary_outputs(self, texts: list[str], ids: list[list[int]],
                         batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(served logits before the temperature, pooled embeddings, energy) from one forward pass: what the
        boundary router reads."""
        logits, emb = self.logits_and_embeddings(texts, ids, batch_size)
        return logits, emb, energy(logits, self.temperature)

    def add_knn(self, head_logits: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """The head's logits with the kNN vote over the embeddings `emb` blended in (when the model has one)."""
        knn_logp = None
        if self.knn_bank is not None:
            knn_logp = knn_log_probs(emb, self.knn_bank[0], self.knn_bank[1], len(self.labels),
                                     int(self.settings.get("knn_k", 10)))
        return combine_logits(head_logits, knn_logp, float(self.settings.get("knn_weight", 0.0)))

    def add_lexical(self, texts: list[str], logits: np.ndarray) -> np.ndarray:
        """`logits` with the lexical vote on `texts` blended in (when the model has one)."""
        if self.lexical is None or not len(texts):
            return logits
        model, weight = self.lexical
        return logits + weight * model.log_proba(texts, len(self.labels))  # type: ignore[no-any-return]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Calibrated probabilities, shape [len(texts), len(labels)]."""
        from tiergate.train.calibration import softmax

        return softmax(self.logits(texts, batch_size), self.temperature)

    def predict(self, texts: list[str], top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        if not texts:
            return []
        from tiergate.train.calibration import softmax

        ids = self.tokenize(texts)
        probs = softmax(self._logits(texts, ids, batch_size), self.temperature)
        lengths = [len(x) for x in ids]
        out = []
        for row, n_tok in zip(probs, lengths, strict=True):
            order = np.argsort(-row)[:top_k]
            top = [(self.labels[i], float(row[i])) for i in order]
            out.append(Prediction(top[0][0], top[0][1], top, n_tok))
        return out


def load_lexical(d: Path, weight: float) -> tuple[LexicalModel, float] | None:
    """The lexical vote saved in `d` with its weight, or None when it has none or its weight is 0."""
    from tiergate.train.lexical import LexicalModel

    if weight <= 0:
        return None
    model = LexicalModel.load(d)
    if model is None:
        raise NotFound(f"{d}: the model blends a lexical vote (weight {weight}) but lexical.json is missing")
    return model, weight


ENSEMBLE_FILE = "ensemble.json"
"""An ensemble's directory: ensemble.json (member directories relative to it, temperature, calibration)."""


class EnsemblePredictor(ClassifierPredictor):
    """A deep ensemble: classifiers trained alike with other seeds (Lakshminarayanan et al. 2017). Its logits are
    the log of the members' mean probability, with one temperature fitted on validation data for the mean.
    `model` is the first member's: what reads embeddings (the boundary router's distances) reads that member's,
    with the ensemble's own logits (`logits_and_embeddings`)."""

    def __init__(self, members: list[ClassifierPredictor], temperature: float,
                 lexical: tuple[LexicalModel, float] | None = None) -> None:
        first = members[0]
        for m in members[1:]:
            if m.labels != first.labels:
                raise ConfigError("ensemble members disagree on the label set")
        super().__init__(first.model, first.tokenizer, first.labels, first.settings, temperature, None, first.device,
                         lexical)
        self.members = members

    @classmethod
    def load_ensemble(cls, d: Path, device: str = "auto") -> EnsemblePredictor:
        info = json.loads((d / ENSEMBLE_FILE).read_text())
        members = [ClassifierPredictor.load(d / rel, device) for rel in info["members"]]
        if not members:
            raise NotFound(f"{d}: an ensemble with no members")
        return cls(members, float(info.get("temperature", 1.0)), load_lexical(d, float(info.get("lexical_weight", 0.0))))

    def _model_logits(self, texts: list[str], ids: list[list[int]], batch_size: int) -> np.ndarray:
        return self._mean_log([m._logits(texts, ids, batch_size) for m in self.members])

    def logits_and_embeddings(self, texts: list[str], ids: list[list[int]],
                              batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The ensemble's served logits, and the first member's embeddings (from the same forward pass that gives
        that member's logits)."""
        member_logits, emb = self._member_logits_and_embeddings(texts, ids, batch_size)
        return self.add_lexical(texts, self._mean_log(member_logits)), emb

    def boundary_outputs(self, texts: list[str], ids: list[list[int]],
                         batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ensemble's served logits, the first member's embeddings, and the members' mean energy: the log of
        a mean probability is normalised, so its logsumexp would not measure the members' evidence (it ranks
        out-of-scope requests backwards); each member's energy under its own temperature does."""
        member_logits, emb = self._member_logits_and_embeddings(texts, ids, batch_size)
        mean_energy = np.mean([energy(z, m.temperature) for z, m in zip(member_logits, self.members, strict=True)],
                              axis=0)
        return self.add_lexical(texts, self._mean_log(member_logits)), emb, mean_energy

    def _member_logits_and_embeddings(self, texts: list[str], ids: list[list[int]],
                                      batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        first, emb = self.members[0].logits_and_embeddings(texts, ids, batch_size)
        return [first, *(m._logits(texts, ids, batch_size) for m in self.members[1:])], emb

    @staticmethod
    def _mean_log(member_logits: list[np.ndarray]) -> np.ndarray:
        """The log of the members' mean probability."""
        from tiergate.train.calibration import softmax

        mean = np.mean([softmax(x, 1.0) for x in member_logits], axis=0)
        return np.log(np.maximum(mean, 1e-12))  # type: ignore[no-any-return]
