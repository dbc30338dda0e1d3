"""Prometheus metrics with the guide's names, so its dashboard queries work as written."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "feed_memory_entries", "Entries held in this process's memory", ["cache"], registry=self.registry
        )
        self.invalidations = Counter(
            "feed_invalidations_total", "Users dropped from L1 by an invalidation", registry=self.registry
        )
