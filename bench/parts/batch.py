"""The window's CPU split into the streaming platform's steady cost and its batch runs' cost.

The benchmark's crons put a recompute and a cache warm in every window (each every 2 minutes, the
shipped schedules every 10 and 5), so the window's platform CPU counts them 5 and 2.5 times as often
as a deployment pays them. This splits the per-second platform CPU into what runs between batch
runs (the steady rate: ingestion, CDC, reads, the minutely checks) and each batch run's cost above
that rate while it ran, then prices the runs at the shipped schedules: the cores a deployment at
this load spends on average.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from itertools import islice

from dagster._utils.schedules import cron_string_iterator  # the daemon's own cron reading

from nova_assets.defs.cache.assets import DEFAULT_CRON as CACHE_CRON
from nova_assets.defs.recommendations.assets import DEFAULT_CRON as RECOMMENDATIONS_CRON

#: the batch schedules and the cron each ships with (the SLO checks, every minute, are steady)
SHIPPED = {"feed_recommendations_schedule": RECOMMENDATIONS_CRON, "feed_cache_schedule": CACHE_CRON}


def period_s(cron: str) -> float:
    """The mean seconds between a cron's ticks over a day."""
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp()
    ticks = [t.timestamp() for t in islice(cron_string_iterator(start, cron, "UTC"), 2000)]
    ticks = [t for t in ticks if t <= start + 86_400] or ticks[:2]
    return (ticks[-1] - ticks[0]) / max(1, len(ticks) - 1)


@dataclass(frozen=True)
class BatchRun:
    schedule: str
    start: float  # created (queued), epoch s: its process start-up is its own cost
    end: float


def _overlapping(t0: float, t1: float, runs: list[BatchRun]) -> list[int]:
    """The runs (by index) a sample from t0 to t1 overlaps: it belongs to them, not to the steady rate."""
    return [k for k, r in enumerate(runs) if t0 < r.end and t1 > r.start]


def split(timeline: list[tuple[float, float, float]], runs: list[BatchRun]) -> dict:
    """Steady cores, each batch run's core-seconds above them, and the cores at the shipped schedules.

    `timeline`: (from, to, platform CPU seconds) per sample. A sample belongs to a run when it
    overlaps the run's span. A run cut by the window's edges is priced by the part inside it.
    """
    inside = [[] for _ in runs]  # type: list[list[tuple[float, float]]]
    steady_s = steady_cpu = 0.0
    for t0, t1, cpu in timeline:
        hits = _overlapping(t0, t1, runs)
        for k in hits:
            inside[k].append((t1 - t0, cpu / len(hits)))
        if not hits:
            steady_s, steady_cpu = steady_s + (t1 - t0), steady_cpu + cpu
    if steady_s <= 0:  # batch runs through the whole window (a short probe): no steady sample to
        # compare with, so the window's mean stands for the steady rate and the runs cost nothing above it
        steady_s, steady_cpu = sum(t1 - t0 for t0, t1, _c in timeline), sum(c for _t0, _t1, c in timeline)
    steady = steady_cpu / steady_s if steady_s > 0 else 0.0
    priced = []
    for run, samples in zip(runs, inside, strict=True):
        seconds = sum(s for s, _c in samples)
        above = max(0.0, sum(c for _s, c in samples) - steady * seconds) if samples else 0.0
        priced.append({"schedule": run.schedule, "seconds": round(seconds, 1), "core_seconds": round(above, 2)})
    per_schedule: dict[str, list[float]] = {}
    for p in priced:
        per_schedule.setdefault(p["schedule"], []).append(p["core_seconds"])
    shipped = steady + sum(sum(v) / len(v) / period_s(SHIPPED[name]) for name, v in per_schedule.items())
    return {
        "platform_cpu_cores_steady": round(steady, 3),
        "batch_runs": priced,
        "platform_cpu_cores_at_shipped_schedules": round(shipped, 3),
    }


def steady_by_part(
    part_timeline: list[tuple[float, float, dict[str, float]]], runs: list[BatchRun]
) -> dict[str, float]:
    """Each part's cores between batch runs (the samples `split` counts as steady), largest first:
    where the steady rate goes."""
    seconds, spent = 0.0, {}  # type: float, dict[str, float]
    for t0, t1, parts in part_timeline:
        if _overlapping(t0, t1, runs):
            continue
        seconds += t1 - t0
        for part, cpu in parts.items():
            spent[part] = spent.get(part, 0.0) + cpu
    if seconds <= 0:
        return {}
    return {k: round(v / seconds, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
