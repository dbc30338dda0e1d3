"""Prometheus metrics with the guide's names, so its dashboard queries work as written, and the
per-minute read counts the SLO checks of other processes read from Redis."""

from __future__ import annotations

import threading

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nova_assets.core.cache import stats
from nova_assets.core.cache.stats import Tally
from nova_assets.core.ports import RedisClient

LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 150, 250, 300, 500, 800, 1000, 2500, 5000)


class FeedMetrics:
    """One registry per service instance (tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "feed_api_latency_ms", "Feed read latency", ["source"], buckets=LATENCY_BUCKETS_MS, registry=self.registry
        )
        self.hits = Counter("cache_hits_total", "Feed cache hits", ["cache_type", "tier"], registry=self.registry)
        self.misses = Counter("cache_misses_total", "Feed cache misses", ["cache_type"], registry=self.registry)
        self.fallbacks = Counter(
            "feed_fallbacks_total", "Feeds served by a fallback", ["reason"], registry=self.registry
        )
        self.clickhouse = Histogram(
            "clickhouse_query_duration_ms",
            "ClickHouse query latency",
            ["query_type"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.entries = Gauge(
            "feed_memory_entries",
            "Entries held in this process's memory (deleted_posts: the deletes it leaves out)",
            ["cache"],
            registry=self.registry,
        )
        self.redis_skipped = Counter(
            "feed_redis_skipped_total",
            "Reads that went past Redis to ClickHouse: Redis too slow for the wait, or failing",
            ["reason"],
            registry=self.registry,
        )


class ReadCounts:
    """Each read counted twice: in this process's Prometheus metrics, and in a tally added every
    `flush_s` to the current minute's Redis hash (one round trip a second, not one per read)."""

    def __init__(self, metrics: FeedMetrics, cache: RedisClient, flush_s: float) -> None:
        self.metrics, self.cache, self.flush_s = metrics, cache, flush_s
        self._tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="feed-stats", daemon=True)
        self._thread.start()

    def count(self, source: str, latency_ms: float) -> None:
        """A read answered from `source` (l1, redis, clickhouse, trending, degraded) in `latency_ms`."""
        self.metrics.latency.labels(source).observe(latency_ms)
        if source in stats.HIT_SOURCES:
            self.metrics.hits.labels("feed", source).inc()
        else:
            self.metrics.misses.labels("feed").inc()
            if source in ("trending", "degraded"):
                self.metrics.fallbacks.labels(source).inc()
        with self._lock:
            self._tally.count(source, latency_ms)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            tally, self._tally = self._tally, Tally()
        if not tally:
            return
        try:
            stats.flush(self.cache, tally)
        except redis.RedisError:
            with self._lock:
                self._tally.update(tally)  # kept for the next flush
