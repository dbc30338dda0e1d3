"""How a loader run cuts and retries its micro-batches, and which partitions it owns."""

from __future__ import annotations

from dataclasses import dataclass

from nova_assets.core.ingestion.offsets import DEFAULT_TOPIC_PATTERNS
from nova_assets.errors import ConfigError, NovaError


class IngestionFailed(NovaError):
    """ClickHouse kept rejecting a batch: nothing of it was committed to Kafka."""


CHECKPOINT_EVERY_S = 5.0  # how often a run records its newest loaded message per partition
INCARNATION_SOURCES = ("auto", "fingerprint")


@dataclass
class IngestSettings:
    max_run_seconds: float = 300.0
    idle_exit_seconds: float = 15.0
    flush_interval_ms: int = 200  # events (event-to-visible goal 1 s)
    cdc_flush_interval_ms: int = 1000  # CDC changes (lag goal 2 s): up to five tables per flush
    max_batch_rows: int = 100_000
    max_message_bytes: int = 262_144
    insert_attempts: int = 6
    retry_max_wait_s: float = 8.0
    commit: bool = True
    topic_patterns: tuple[str, ...] = DEFAULT_TOPIC_PATTERNS
    shard: int = 0  # this loader owns the partitions p with p % shards == shard (NOVA_INGEST_SHARDS)
    shards: int = 1
    # "auto": the broker's topic IDs, checked against the log when they change or are missing;
    # "fingerprint": the log alone, for brokers whose topic IDs cannot be trusted
    incarnations: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"shard={self.shard} must be within 0..shards-1 (shards={self.shards})")
        if self.incarnations not in INCARNATION_SOURCES:
            raise ConfigError("incarnations", self.incarnations, f"must be one of {', '.join(INCARNATION_SOURCES)}")

    def owns(self, partition: int) -> bool:
        """Stable assignment: a partition always belongs to the same shard while the shard count stays."""
        return partition % self.shards == self.shard
