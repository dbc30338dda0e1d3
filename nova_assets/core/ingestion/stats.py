"""What one ingestion run did: rows, dead letters, ranges, lags; its Dagster metadata."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nova_assets.core import quantiles
from nova_assets.core.ingestion.messages import CDC_TOPIC_PREFIX, EVENTS_TOPIC

if TYPE_CHECKING:
    from nova_assets.core.ingestion.batch import Batch

TP = tuple[str, int]


@dataclass
class IngestStats:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letter_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ranges: dict[TP, list[int]] = field(default_factory=dict)  # tp -> [first, last] loaded or skipped
    batches: int = 0
    bytes: int = 0
    skipped_already_loaded: int = 0
    paced: bool = False  # fetches paced at the stream's head (IngestSettings.paced_fetch)
    tombstones: int = 0
    unknown_fields: int = 0
    slowest_insert_s: float = 0.0
    slowest_commit_s: float = 0.0
    commits_failed: int = 0  # asynchronous commits the broker refused or never answered
    resets: list[str] = field(default_factory=list)  # "topic: old → new" per incarnation change seen
    expired: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> messages retention removed unloaded
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    e2v_ms: list[np.ndarray] = field(default_factory=list)
    cdc_lag_ms: list[np.ndarray] = field(default_factory=list)
    lag_ms_by_topic: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    batches_by_topic: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def per_topic(self) -> list[dict[str, Any]]:
        """One row per topic: rows, dead letters, batches and its lag quantiles (e2v or CDC lag), in s."""
        out = []
        for topic in sorted(set(self.rows) | set(self.dead_letters) | set(self.batches_by_topic)):
            parts = self.lag_ms_by_topic.get(topic)
            lag = np.concatenate(parts) / 1000.0 if parts else None
            p50, p95, p99 = np.percentile(lag, [50, 95, 99]) if lag is not None else (None, None, None)
            out.append(
                {
                    "topic": topic,
                    "rows": self.rows.get(topic, 0),
                    "dead_letters": self.dead_letters.get(topic, 0),
                    "batches": self.batches_by_topic.get(topic, 0),
                    "lag": "event_to_visible" if topic == EVENTS_TOPIC else "cdc_lag",
                    "p50_s": None if p50 is None else round(float(p50), 3),
                    "p95_s": None if p95 is None else round(float(p95), 3),
                    "p99_s": None if p99 is None else round(float(p99), 3),
                }
            )
        return out

    @property
    def messages(self) -> int:
        return sum(self.rows.values()) + sum(self.dead_letters.values()) + self.tombstones

    def quantiles(self, which: str) -> dict[str, float]:
        parts = self.e2v_ms if which == "e2v" else self.cdc_lag_ms
        if not parts:
            return {}
        return quantiles.summary(np.concatenate(parts), scale=1 / 1000.0, suffix="_s")

    def metadata(self) -> dict[str, Any]:
        elapsed = max(1e-6, (self.finished or time.time()) - self.started)
        out: dict[str, Any] = {
            "rows_per_topic": dict(self.rows),
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letters_per_topic": dict(self.dead_letters),
            "dead_letter_kinds": dict(self.dead_letter_kinds),
            "offset_ranges": {f"{t}:{p}": f"{r[0]}-{r[1]}" for (t, p), r in sorted(self.ranges.items())},
            "batches": self.batches,
            "bytes": self.bytes,
            "messages": self.messages,
            "skipped_already_loaded": self.skipped_already_loaded,
            "paced": self.paced,
            "tombstones_ignored": self.tombstones,
            "unknown_fields_ignored": self.unknown_fields,
            "slowest_insert_s": round(self.slowest_insert_s, 3),
            "slowest_commit_s": round(self.slowest_commit_s, 3),
            "commits_failed": self.commits_failed,
            "topic_resets": "; ".join(self.resets) if self.resets else "none",
            "expired_before_load": sum(self.expired.values()),
            "seconds": round(elapsed, 3),
            "messages_per_s": round(self.messages / elapsed, 1),
        }
        for which, label in (("e2v", "event_to_visible"), ("cdc", "cdc_lag")):
            q = self.quantiles(which)
            if q:
                out[f"{label}_p50_s"] = round(q["p50_s"], 3)
                out[f"{label}_p95_s"] = round(q["p95_s"], 3)
                out[f"{label}_p99_s"] = round(q["p99_s"], 3)
        return out

    def commit_answered(self, err: Any, partitions: list[Any], warn: Callable[[str], None]) -> None:
        """An asynchronous commit's answer (librdkafka's on_commit): a refused one is counted and said.
        The next run skips what is loaded either way, but the group's lag goes stale, and
        `nova stack down`'s drain and the consumer-lag check trust it."""
        failed = [tp for tp in partitions or () if tp.error is not None]
        if err is None and not failed:
            return
        self.commits_failed += 1
        if self.commits_failed <= 3 or self.commits_failed % 100 == 0:
            warn(f"offset commit #{self.commits_failed} refused by the broker: {err or failed[0].error}")

    def record(self, batch: Batch, visible: float) -> None:
        """Count a flushed batch, visible in ClickHouse at `visible` (epoch seconds)."""
        visible_ms = visible * 1000.0
        if len(batch.events):
            e2v = visible_ms - np.asarray(batch.events.event_ms, dtype=np.float64)
            self.e2v_ms.append(e2v)
            self.lag_ms_by_topic[EVENTS_TOPIC].append(e2v)
            self.unknown_fields += batch.events.unknown_fields
        for table, source_ms in batch.change_ms.items():
            lag = visible_ms - np.asarray(source_ms, dtype=np.float64)
            self.cdc_lag_ms.append(lag)
            self.lag_ms_by_topic[f"{CDC_TOPIC_PREFIX}{table}"].append(lag)
        for topic in {t for t, _p in batch.ranges}:
            self.batches_by_topic[topic] += 1
        if len(batch.events):
            self.rows[EVENTS_TOPIC] += len(batch.events)
        for table, rows in batch.changes.items():
            self.rows[f"{CDC_TOPIC_PREFIX}{table}"] += len(rows)
        for topic in batch.dead_topics:
            self.dead_letters[topic] += 1
        for tp, (first, last) in batch.ranges.items():
            span = self.ranges.get(tp)
            self.ranges[tp] = [first, last] if span is None else [span[0], last]
        self.batches += 1
        self.bytes += batch.bytes
