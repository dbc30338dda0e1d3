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
    paced: bool = True  # fetch at most twice per events flush, not once per produced batch (`paced_fetch`)
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

    def paced_fetch(self) -> dict[str, int]:
        """The loader consumer's fetch pacing. At a stream's head a consumer fetches once per batch a
        producer sends (20 a second per producer lingering 50 ms), though the loader writes once per
        flush; each fetch that finds data costs the broker more than its bytes (the local Tansu's
        memory engine lists every batch the partition holds on each one: measured 0.17 cores for
        2,000 messages/s over 10k stored batches, 0.09 paced). While an events batch is open the
        loader leaves arrivals with the consumer until the batch is due, and librdkafka postpones a
        partition's next fetch by `fetch.queue.backoff.ms` while messages wait in its queue: about
        two fetches per flush, and a message waits in the broker instead of in the open batch.
        Catching up, a fetch brings up to the broker's 5 MB and the next follows the backoff."""
        if not self.paced:
            return {}
        return {"queued.min.messages": 1, "fetch.queue.backoff.ms": max(10, self.flush_interval_ms // 2)}

    def owns(self, partition: int) -> bool:
        """Stable assignment: a partition always belongs to the same shard while the shard count stays."""
        return partition % self.shards == self.shard
