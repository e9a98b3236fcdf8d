"""The gateway's monitor: drift and hallucination checks on live traffic, off the request path.

    monitor = attach_monitor(app, MonitorConfig(...))     # joins gateway.observers (idempotent)
    monitor.status()                                      # per workload: last checks, alarms, flags per tier
    await monitor.close()                                 # finish the batch in progress

The observer hooks only check answers (cheap, pure functions) and queue what the detectors need; a worker
embeds queued inputs in batches in a thread (the bundled MiniLM, loaded on first use) and feeds each
workload's `DriftDetector`. Check results go to the store (`monitor_checks`, read by `tiergate monitor
status`), to Prometheus, and, when a check starts alarming, to the log and the webhook. The queue is bounded:
when the monitor falls behind, the oldest requests are dropped (and counted), never the gateway slowed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import insert

from tiergate.data.dataset import input_text
from tiergate.evaluate.metrics import match_label
from tiergate.gateway.metrics import OTHER_WORKLOAD
from tiergate.monitor.alerts import AlertRouter
from tiergate.monitor.config import MonitorConfig, WorkloadMonitorConfig
from tiergate.monitor.detector import CheckResult, DetectorSettings, DriftDetector
from tiergate.monitor.hallucination import check_answer
from tiergate.rollout.compare import DEFAULT_AGREE_AT, compare_answers
from tiergate.rollout.state import ensure_tables, monitor_checks

log = logging.getLogger("tiergate.monitor")

Embed = Callable[[list[str]], np.ndarray]


@dataclass
class _Item:
    workload: str
    text: str | None = None
    label: str | None = None
    confidence: float | None = None
    flagged: bool | None = None
    agree: bool | None = None
    tier: str | None = None
    scope_check: bool = False


@dataclass
class _Workload:
    name: str
    cfg: WorkloadMonitorConfig
    task: str | None
    tiers: set[str]
    detector: DriftDetector | None = None
    loaded: bool = False
    flags: dict[str, Counter[str]] = field(default_factory=dict)


class Monitor:
    def __init__(self, gateway: Any, config: MonitorConfig, *, embed: Embed | None = None) -> None:
        self.gateway = gateway
        self.config = config
        self.engine = gateway.engine
        ensure_tables(self.engine)
        registry = getattr(getattr(gateway, "metrics", None), "registry", None)
        self.alerts = AlertRouter(webhook_url=config.webhook_url, webhook_timeout_s=config.webhook_timeout_s,
                                  registry=registry)
        self.settings = DetectorSettings(window=config.window, step=config.step, alpha=config.alpha,
                                         consecutive=config.consecutive,
                                         permutations=config.permutations, quality_threshold=config.quality_threshold,
                                         confidence=config.confidence, seed=config.seed)
        self.workloads: dict[str, _Workload] = {}
        self.pending: deque[_Item] = deque(maxlen=config.max_pending)
        self.dropped = 0
        self.processed = 0
        self._embed = embed
        self._lock = threading.Lock()
        self._worker: asyncio.Task[None] | None = None

    # -- observer hooks ---------------------------------------------------------------------------------------
    def _wl(self, name: str) -> _Workload | None:
        """The workload's monitoring state, made on first sight. Workload names come from callers: those the monitor
        config names are always watched, of the others those the gateway's metrics give a label of their own
        (`Metrics.workload_label`: the configured ones and the first unconfigured ones); each holds detectors and
        alert series, so made-up names would grow memory and /metrics without bound."""
        wl = self.workloads.get(name)
        if wl is None:
            metrics = getattr(self.gateway, "metrics", None)
            if name not in self.config.workloads and metrics is not None \
                    and metrics.workload_label(name) == OTHER_WORKLOAD:
                return None
            cfg = self.config.workloads.get(name) or WorkloadMonitorConfig()
            wcfg = self.gateway.config.workloads.get(name)
            task = cfg.task or (wcfg.task if wcfg is not None else None)
            tiers = set(cfg.tiers) if cfg.tiers is not None else {
                n for n, t in self.gateway.config.tiers.items() if t.kind in ("classifier", "extractor", "local_lm")}
            wl = self.workloads[name] = _Workload(name, cfg, task, tiers)
        return wl

    def on_record(self, rec: dict[str, Any]) -> None:
        if not self.config.enabled or rec.get("role") not in ("primary", "cascade_first"):
            return
        wl = self._wl(rec["workload"])
        if wl is None:
            return
        text = input_text(rec["messages"]) if rec.get("messages") else None
        item = _Item(wl.name, text=text if rec["role"] == "primary" else None)
        if rec.get("tier") in wl.tiers and rec.get("status") == "ok":
            self._answer(wl, item, rec, text)
        self._enqueue(item)

    def on_shadow(self, primary: dict[str, Any], shadow: dict[str, Any]) -> None:
        if not self.config.enabled or primary.get("status") != "ok" or shadow.get("status") != "ok":
            return
        wl = self._wl(primary["workload"])
        if wl is None:
            return
        small_p, small_s = primary.get("tier") in wl.tiers, shadow.get("tier") in wl.tiers
        if small_p == small_s:
            return
        item = _Item(wl.name)
        ref, cand = (shadow, primary) if small_p else (primary, shadow)
        score = compare_answers(wl.task, ref.get("answer"), cand.get("answer"), wl.cfg.labels)
        item.agree = score >= DEFAULT_AGREE_AT.get(wl.task or "", 1.0)
        if small_s:
            text = input_text(primary["messages"]) if primary.get("messages") else None
            self._answer(wl, item, shadow, text)
        self._enqueue(item)

    def _answer(self, wl: _Workload, item: _Item, rec: dict[str, Any], text: str | None) -> None:
        response = rec.get("response") or {}
        confidence = response.get("confidence")
        flags = check_answer(wl.cfg, text or "", rec.get("answer"), confidence=confidence, task=wl.task)
        tier = rec["tier"]
        counts = wl.flags.setdefault(tier, Counter())
        counts["checked"] += 1
        for kind in {f.split(":", 1)[0] for f in flags}:
            counts[kind] += 1
        self.alerts.flagged(wl.name, tier, flags)
        item.tier, item.flagged, item.confidence = tier, bool(flags), confidence
        if wl.task == "classification":
            answer = (rec.get("answer") or "").strip()
            item.label = match_label(answer, wl.cfg.labels) if wl.cfg.labels else answer
        item.scope_check = wl.cfg.min_similarity is not None and "out_of_scope" not in flags and text is not None
        if item.scope_check and item.text is None:
            item.text = text

    def _enqueue(self, item: _Item) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(item)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            batch = list(self.pending)
            self.pending.clear()
            try:
                await asyncio.to_thread(self.process, batch)
            except Exception:
                log.exception("monitor: a batch of %d requests failed", len(batch))

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.wait({self._worker}, timeout=60)

    # -- the worker (in a thread) -------------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        if self._embed is None:
            from tiergate.tiers.hf import load_sentence_encoder

            model = load_sentence_encoder(self.config.encoder)
            self._embed = lambda t: model.encode(t, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(self._embed(texts), dtype=np.float32)

    def _load(self, wl: _Workload) -> None:
        from tiergate.monitor.reference import load_reference

        wl.loaded = True
        reference, label_counts = None, None
        if wl.cfg.reference:
            try:
                reference, label_counts, labels = load_reference(wl.cfg.reference, self.embed, self.config,
                                                                 embed_inputs=wl.cfg.input_drift)
                if wl.cfg.labels is None and labels:
                    wl.cfg = wl.cfg.model_copy(update={"labels": labels})
            except Exception:
                log.exception("monitor %s: cannot load the reference %s", wl.name, wl.cfg.reference)
        wl.detector = DriftDetector(self.settings, reference=reference, label_counts=label_counts)

    def process(self, batch: list[_Item]) -> list[CheckResult]:
        """Feed a batch to the detectors (in order); persist and alert on every check that ran."""
        with self._lock:
            for item in batch:
                wl = self.workloads[item.workload]
                if not wl.loaded:
                    self._load(wl)
            need = [i for i, it in enumerate(batch) if it.text is not None
                    and self.workloads[it.workload].detector.reference is not None]  # type: ignore[union-attr]
            embs = self.embed([batch[i].text for i in need]) if need else np.zeros((0, 1), np.float32)  # type: ignore[misc]
            emb_of = dict(zip(need, embs, strict=True))
            ran: list[tuple[str, CheckResult]] = []
            for i, it in enumerate(batch):
                wl = self.workloads[it.workload]
                det = wl.detector
                assert det is not None
                results: list[CheckResult] = []
                if i in emb_of:
                    results += det.add_input(emb_of[i])
                    if it.scope_check and det.reference is not None and it.tier is not None:
                        sim = float(det.reference.max_similarity(emb_of[i][None, :])[0])
                        if sim < (wl.cfg.min_similarity or -1.0):
                            wl.flags.setdefault(it.tier, Counter())["out_of_scope"] += 1
                            self.alerts.flagged(wl.name, it.tier, ["out_of_scope"])
                            it.flagged = True
                if it.label is not None or it.confidence is not None:
                    results += det.add_output(it.label, it.confidence)
                if it.agree is not None:
                    results += det.add_quality(it.agree)
                if it.flagged is not None:
                    results += det.add_checked(it.flagged)
                ran += [(wl.name, r) for r in results]
            self.processed += len(batch)
        if ran:
            self._persist(ran)
        for workload, r in ran:
            self.alerts.check(workload, r)
        return [r for _, r in ran]

    def model_changed(self, workload: str, reason: str) -> None:
        """The workload's small model was swapped (`tiergate retrain` accepted): judging the new model's answers
        against the old one's confidence baseline alarmed on unchanged traffic, and with `hold_on_drift` held the
        new rollout for good. Its answer checks start afresh, their alarms clear, queued answers of the old model
        are dropped (their inputs still count for input drift), and a row per cleared check records why."""
        with self._lock:
            wl = self.workloads.get(workload)
            if wl is None or wl.detector is None:
                return
            had = wl.detector.reset_model()
            for it in self.pending:
                if it.workload == workload:
                    it.label = it.confidence = it.agree = it.flagged = None
        cleared = [CheckResult(kind, 0, None, None, False, {"reset": reason}) for kind in had]
        if cleared:
            self._persist([(workload, r) for r in cleared])
        for r in cleared:
            self.alerts.check(workload, r)
        log.warning("monitor %s: %s; answer checks start afresh (%s)", workload, reason, ", ".join(had) or "none ran")

    def _persist(self, ran: list[tuple[str, CheckResult]]) -> None:
        import time

        rows = []
        for workload, r in ran:
            detail = dict(r.detail)
            if r.kind == "hallucination":
                detail["by_tier"] = {t: dict(c) for t, c in self.workloads[workload].flags.items()}
            rows.append({"workload": workload, "kind": r.kind, "at": time.time(), "n": r.n,
                         "statistic": r.statistic, "p_value": r.p_value, "alarm": r.alarm,
                         "detail": _jsonable(detail)})
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(monitor_checks), rows)
        except Exception as exc:
            log.error("monitor: cannot store %d check results: %s", len(rows), exc.__class__.__name__)

    def alarming(self, workload: str) -> list[str]:
        """The checks alarming now for `workload` (what holds its rollout's automatic advance)."""
        return sorted(k for (w, k), a in self.alerts.alarming.items() if w == workload and a)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pending": len(self.pending), "dropped": self.dropped, "processed": self.processed,
                               "workloads": {}}
        for name, wl in self.workloads.items():
            det = wl.detector
            out["workloads"][name] = {
                "task": wl.task, "tiers": sorted(wl.tiers), "reference": wl.cfg.reference,
                "checks": {k: r.to_json() for k, r in (det.last.items() if det else [])},
                "alarming": self.alarming(name),
                "hallucinations": {t: dict(c) for t, c in wl.flags.items()},
            }
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def attach_monitor(app_or_gateway: Any, config: MonitorConfig | None = None, *, embed: Embed | None = None
                   ) -> Monitor:
    """The gateway's monitor, created and joined to `gateway.observers` on first call (idempotent)."""
    gateway = getattr(getattr(app_or_gateway, "state", None), "gateway", app_or_gateway)
    for obs in gateway.observers:
        if isinstance(obs, Monitor):
            return obs
    config = config or getattr(gateway.config, "monitor", None) or MonitorConfig()
    monitor = Monitor(gateway, config, embed=embed)
    gateway.observers.append(monitor)
    if hasattr(app_or_gateway, "state"):
        app_or_gateway.state.monitor = monitor
    return monitor
