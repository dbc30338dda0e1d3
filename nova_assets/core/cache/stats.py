"""The read path's hit/miss counters: written by `nova serve`, read by the SLO checks and the cache
asset. One module owns the per-minute Redis hash and its fields, so writer and readers agree.

Each `nova serve` process tallies in memory and adds its tally every second to the hash of the
current minute (`nova:feed:stats:<minute>`: `hits_l1`, `hits_redis`, `misses`, `fallback_<why>`,
and hit latency buckets `hit_le_<ms>`), which lives a day.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

from nova_assets.core.cache.keys import STATS_TTL_S, stats_key
from nova_assets.core.ports import RedisClient

HIT_BUCKETS_MS = (5, 10, 25, 50, 100, 150, 300, 1000)
HIT_SOURCES = ("l1", "redis")


class Tally(Counter[str]):
    """Counts of one process since its last flush."""

    def count(self, source: str, latency_ms: float) -> None:
        """A read answered from `source` (l1, redis, clickhouse, trending, degraded) in `latency_ms`."""
        if source in HIT_SOURCES:
            self[f"hits_{source}"] += 1
            self[next((f"hit_le_{b}" for b in HIT_BUCKETS_MS if latency_ms <= b), "hit_le_inf")] += 1
        else:
            self["misses"] += 1
            if source != "clickhouse":
                self[f"fallback_{source}"] += 1


def flush(cache: RedisClient, tally: Tally, now: float | None = None) -> None:
    """Add a tally to the current minute's hash (one round trip); raises redis errors to the caller."""
    key = stats_key(None if now is None else int(now // 60))
    pipe = cache.pipeline(transaction=False)
    for field, n in tally.items():
        pipe.hincrby(key, field, n)
    pipe.expire(key, STATS_TTL_S)
    pipe.execute()


def by_minute(cache: RedisClient, minutes: int, now: float | None = None) -> list[tuple[int, dict[str, int]]]:
    """(minute, counters) for the last `minutes` minutes, oldest first (empty dicts where no reads)."""
    current = int((now if now is not None else time.time()) // 60)
    wanted = list(range(current - minutes + 1, current + 1))
    pipe = cache.pipeline(transaction=False)
    for minute in wanted:
        pipe.hgetall(stats_key(minute))
    out = []
    for minute, counters in zip(wanted, pipe.execute(), strict=True):
        out.append((minute, {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in counters.items()}))
    return out


def hits(counters: dict[str, int]) -> int:
    return sum(counters.get(f"hits_{s}", 0) for s in HIT_SOURCES)


def totals(cache: RedisClient, minutes: int) -> dict[str, int]:
    """The counters summed over the last `minutes` minutes."""
    out: Counter[str] = Counter()
    for _minute, counters in by_minute(cache, minutes):
        out.update(counters)
    return dict(out)


def hit_p95_ms(counters: dict[str, Any]) -> float | None:
    """P95 of the hit latency from the buckets (the bucket's bound; beyond the last, twice it)."""
    bounds = [*HIT_BUCKETS_MS, float("inf")]
    counts = [counters.get(f"hit_le_{b}" if b != float("inf") else "hit_le_inf", 0) for b in bounds]
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, n in zip(bounds, counts, strict=True):
        seen += n
        if seen >= 0.95 * total:
            return float(bound) if bound != float("inf") else float(HIT_BUCKETS_MS[-1] * 2)
    return None


def minute_label(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%Y-%m-%d %H:%M")
