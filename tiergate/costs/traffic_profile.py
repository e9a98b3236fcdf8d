"""Advisor profiles filled from captured traffic (`tiergate advise --from-traffic`).

    stats = workload_traffic_stats(engine, config, "support-triage")
    profile = profile_from_traffic(stats, answers={"ml_capacity": "some"})
    for profile, stats in traffic_profiles(engine, config, answers=...): ...   # every workload in the store

What the traffic shows: monthly volume (answered requests over the observed window, extrapolated to a month),
frontier spend a month (the same traffic all on the baseline tier: the external tier the spend report compares
against), tokens per request on that tier (the spend report's token basis: measured where shadow or cascade pairs
show them), the frontier model, the task (the workload config's `task`, else the structure of
the captured answers: labels -> classification, JSON -> extraction, free text -> generation), captured answers
from external tiers as labelled examples, and the share of requests the privacy router kept on-prem (route
reasons starting with "privacy"). The rest (ML capacity, stability, budgets) comes from `answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiergate.costs.profile import Profile, profile_from_traffic
from tiergate.costs.report import spend_report, traffic_window
from tiergate.errors import DataError


def _answers_and_counts(engine: Any, config: Any, workload: str, since: float | None, until: float | None,
                        sample: int) -> tuple[list[str], int, int, tuple[int, int]]:
    """The newest `sample` answers, answered records from external tiers, privacy-routed requests, and the
    prompt and completion tokens of the answered requests (a cascade's first attempt repeats its request)."""
    from sqlalchemy import func, select

    from tiergate.store.schema import records as r

    external = [t for t, tier in config.tiers.items() if tier.zone == "external"]
    base = (r.c.workload == workload, r.c.role == "primary")
    window = [c for c in (None if since is None else r.c.created_at >= since,
                          None if until is None else r.c.created_at < until) if c is not None]
    with engine.connect() as conn:
        answers = [a for (a,) in conn.execute(
            select(r.c.answer).where(*base, *window, r.c.status == "ok", r.c.answer.is_not(None))
            .order_by(r.c.id.desc()).limit(sample))]
        labelled = conn.execute(select(func.count()).select_from(r).where(
            *base, *window, r.c.status == "ok", r.c.answer.is_not(None), r.c.tier.in_(external))).scalar_one()
        private = conn.execute(select(func.count()).select_from(r).where(
            *base, *window, r.c.route_reason.like("privacy%"))).scalar_one()
        prompt, completion = conn.execute(select(func.sum(r.c.prompt_tokens), func.sum(r.c.completion_tokens)).where(
            *base, *window, r.c.status == "ok")).one()
    return answers, int(labelled), int(private), (int(prompt or 0), int(completion or 0))


def workload_traffic_stats(engine: Any, config: Any, workload: str, *, since: float | None = None,
                           until: float | None = None, book: Any = None, sample: int = 2000) -> dict[str, Any]:
    """The `stats` mapping profile_from_traffic takes, plus what it was computed from (keys starting `_`)."""
    from tiergate.analyze.structure import output_structure

    report = spend_report(engine, config, since=since, until=until, workload=workload, book=book)
    spend = report["spend"]
    window = traffic_window(engine, since=since, until=until, workload=workload)
    if spend["requests"] == 0:
        raise DataError(f"workload {workload!r}: no answered requests captured in the window")
    if window.monthly_factor is None:
        raise DataError(f"workload {workload!r}: {window.requests} request(s) in the window: too few, or under an "
                        "hour apart, to extrapolate a monthly volume; widen --since or capture more traffic")
    answers, labelled, private, tokens = _answers_and_counts(engine, config, workload, since, until, sample)
    structure = output_structure(answers)
    wl_config = config.workloads.get(workload)
    task = wl_config.task if wl_config is not None and wl_config.task else structure.task
    base = report["baseline"]
    model = None
    basis = None
    if base is not None:
        tier = config.tiers[base["tier"]]
        source = report["tiers"][base["tier"]]["price_source"]
        model = source.removeprefix("book:") if source.startswith("book:") else getattr(tier, "model", None)
        # tokens a request has on the frontier model (measured or scaled where pairs show the difference), the
        # same requests and counts that price its frontier spend
        basis = base["basis"]
        tokens = (round(basis["prompt_tokens"]), round(basis["completion_tokens"]))
    return {
        "workload": workload, "requests": spend["requests"], "days": window.days,
        "cost_usd": None if base is None else base["cost_usd"], "model": model,
        "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
        "task": task, "labelled_examples": labelled, "private_share": private / max(1, window.requests),
        "_baseline_tier": None if base is None else base["tier"], "_actual_cost_usd": spend["cost_usd"],
        "_unpriced_requests": spend["unpriced_requests"], "_structure": structure.as_dict(),
        "_task_from": "workload config" if wl_config is not None and wl_config.task else "answer structure",
        "_tokens_from": ("captured records (no priced baseline tier)" if basis is None
                         else f"on {base['tier']}: {basis['label']}"),
    }


def traffic_profiles(engine: Any, config: Any, *, workload: str | None = None, answers: Mapping[str, Any] | None = None,
                     since: float | None = None, book: Any = None, answers_source: str = "<answers>",
                     skipped: list[str] | None = None) -> list[tuple[Profile, dict[str, Any]]]:
    """A profile per workload (or just `workload`) captured in the window, with the statistics behind it
    (`answers_source`: the answers file, named in errors about the values it gave). Without `workload`, a
    workload whose traffic cannot be extrapolated (too few requests, or a burst under an hour) is left out and
    its reason added to `skipped`; DataError only when that leaves none."""
    from sqlalchemy import select

    from tiergate.store.schema import records as r

    if workload is not None:
        names = [workload]
    else:
        q = select(r.c.workload).distinct().where(r.c.role == "primary", r.c.status == "ok")
        if since is not None:
            q = q.where(r.c.created_at >= since)
        with engine.connect() as conn:
            names = sorted(str(w) for (w,) in conn.execute(q))
        if not names:
            raise DataError("no answered requests captured in the window")
    out = []
    reasons = []
    for name in names:
        try:
            stats = workload_traffic_stats(engine, config, name, since=since, book=book)
        except DataError as exc:
            if workload is not None:
                raise
            reasons.append(exc.message)
            continue
        public = {k: v for k, v in stats.items() if not k.startswith("_")}
        out.append((profile_from_traffic(public, answers, answers_source), stats))
    if not out:
        raise DataError("no workload can be advised from the window: " + "; ".join(reasons))
    if skipped is not None:
        skipped.extend(reasons)
    return out
