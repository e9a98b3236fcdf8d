"""The cascade: the small tier answers first; its answer is kept when it is confident and valid, else the
request goes on to the large tier (the record keeps both answers).

    policy:
      - kind: cascade
        small: intents              # a classifier or local_lm tier that reports a confidence
        large: frontier
        threshold: 0.62             # keep when confidence >= threshold ...
        calibration: models/intents-cascade.json    # ... or read it from `tiergate router calibrate` output

    decision = router.decide(req)                  # RouteDecision(small, "cascade", reviewer=router)
    # the gateway calls the small tier, then:
    escalate = await decision.reviewer.review(req, result)   # RouteDecision(large, "cascade:escalated") or None

Confidence is `TierResult.confidence`: the classifier tier's calibrated class probability, the local LM tier's
exp(mean token log-probability). Validity: an answer must be non-empty; a label must be in the label set (the
classifier tier's labels.json, or `labels`); when the request asks for JSON the answer must parse, and match
the requested json_schema. `detail["why"]` says which check sent the request on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext
from tiergate.routing.validity import parse_json_answer, requested_schema, schema_errors, wants_json


class CascadeRouter(Router):
    """The small tier answers first; its answer is kept when confident and valid, else the large tier answers."""

    kind = "cascade"

    class Options(RouterOptions):
        small: str = Field(description="the tier that answers first")
        large: str = Field(description="the tier that answers when the small one's answer is not kept")
        threshold: float | None = Field(None, ge=0, le=1, description="keep answers whose confidence is at least "
                                                                       "this")
        calibration: str | None = Field(None, description="JSON file from `tiergate router calibrate` holding the "
                                                          "threshold (relative to the config's directory)")
        labels: list[str] | None = Field(None, description="the valid labels (default: the small classifier "
                                                           "tier's labels.json)")
        check_labels: bool = Field(True, description="escalate answers that are not in the label set")
        check_json: bool = Field(True, description="escalate answers that are not JSON (or break the requested "
                                                   "schema) when the request asks for JSON")
        missing_confidence: Literal["keep", "escalate"] = Field(
            "escalate", description="what to do with an answer that carries no confidence")
        on_stream: Literal["cascade", "small", "large"] = Field(
            "cascade", description="streamed requests: 'cascade' (the gateway buffers the small answer), or send "
                                   "them straight to the small or large tier")

        @model_validator(mode="after")
        def _one_threshold(self) -> CascadeRouter.Options:
            if self.threshold is None and self.calibration is None:
                raise ValueError("cascade needs `threshold` or `calibration`")
            return self

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        opts: CascadeRouter.Options = self.options  # type: ignore[assignment]
        self.threshold: float = opts.threshold if opts.threshold is not None else self._read_threshold(opts.calibration)
        self.labels: frozenset[str] | None = frozenset(opts.labels) if opts.labels else None
        self._labels_loaded = self.labels is not None

    def _path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(self.ctx.base_dir) / path

    def _read_threshold(self, calibration: str | None) -> float:
        assert calibration is not None
        path = self._path(calibration)
        where = f"workloads.{self.ctx.workload}: cascade calibration {path}"
        try:
            data = json.loads(path.read_text())
            threshold = float(data["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: cannot read a threshold ({exc})") from exc
        if data.get("kind", "cascade") != "cascade":
            raise ConfigError(f"{where}: a {data['kind']!r} router's file, not a cascade calibration (write one with "
                              "`tiergate router calibrate`)")
        if not 0 <= threshold <= 1:
            raise ConfigError(f"{where}: threshold {threshold:g} is not a confidence between 0 and 1")
        return threshold

    def _load_labels(self) -> None:
        """The small tier's label set, when it is a classifier tier (read from its model directory)."""
        self._labels_loaded = True
        if not self.options.check_labels:  # type: ignore[attr-defined]
            return
        tier = self.ctx.tiers.get(self.options.small)  # type: ignore[attr-defined]
        if tier is None or getattr(tier, "kind", None) != "classifier":
            return
        path = Path(tier.model) / "labels.json"
        try:
            self.labels = frozenset(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cascade: cannot read the small tier's labels ({path}: {exc})") from exc

    async def start(self) -> None:
        if not self._labels_loaded:
            self._load_labels()

    def decide(self, req: RouteRequest) -> RouteDecision:
        opts: CascadeRouter.Options = self.options  # type: ignore[assignment]
        if req.body.get("stream") and opts.on_stream != "cascade":
            return RouteDecision(opts.small if opts.on_stream == "small" else opts.large, "cascade:stream")
        return RouteDecision(opts.small, "cascade", reviewer=self)

    def check(self, req: RouteRequest, content: str | None, confidence: float | None) -> str | None:
        """Why the answer must not be kept, or None to keep it."""
        opts: CascadeRouter.Options = self.options  # type: ignore[assignment]
        if not self._labels_loaded:
            self._load_labels()
        if content is None or not content.strip():
            return "empty"
        if opts.check_json and wants_json(req.body):
            ok, value = parse_json_answer(content)
            if not ok:
                return "invalid_json"
            schema = requested_schema(req.body)
            if schema and schema_errors(schema, value):
                return "schema_mismatch"
        elif opts.check_labels and self.labels is not None and content.strip() not in self.labels:
            return "invalid_label"
        if confidence is None:
            return "no_confidence" if opts.missing_confidence == "escalate" else None
        if confidence < self.threshold:
            return "low_confidence"
        return None

    async def review(self, req: RouteRequest, result: Any) -> RouteDecision | None:
        confidence = getattr(result, "confidence", None)
        why = self.check(req, getattr(result, "content", None), confidence)
        if why is None:
            return None
        return RouteDecision(self.options.large, "cascade:escalated", score=confidence,  # type: ignore[attr-defined]
                             detail={"why": why, "threshold": self.threshold, "small_tier": self.options.small})  # type: ignore[attr-defined]
