"""The ingestion run (launched by the sensor) and the replay job, reporting to the asset graph.

A run is an op job that logs materializations of `events` and the CDC mirrors it loaded, so the
asset pages show every micro-batch run with its figures.
"""

import datetime as dt
import socket
import threading
import time
from typing import TYPE_CHECKING

import dagster as dg
from confluent_kafka import Consumer, TopicPartition

from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.ingestion.messages import CDC_TOPIC_PREFIX, EVENTS_TOPIC
from nova_assets.core.ingestion.stats import IngestStats
from nova_assets.defs.ingestion.handover import ENDS_AT_TAG, SuccessorWatch, await_turn
from nova_assets.defs.tables import escape_bytes, frame, table
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.resources.kafka import KafkaResource

if TYPE_CHECKING:  # pandas loads lazily: ~0.4 s of CPU at every run's start, for a few tables of metadata
    import pandas as pd

PIPELINE_TAG = "nova/pipeline"
LOADER_TAG = "nova/kafka-loader"  # dagster.yaml runs at most one run per value of this tag at a time
HEARTBEAT_TAG = "nova/heartbeat"
RANGES_TAG = "nova/offsets"


class IngestConfig(dg.Config):
    """How long one ingestion run keeps consuming, and how it cuts micro-batches."""

    max_run_seconds: float = 600.0
    idle_exit_seconds: float = 30.0
    flush_interval_ms: int = 200  # events
    cdc_flush_interval_ms: int = 1000  # CDC changes: each flush inserts into up to five mirror tables
    # at most ~two fetches per events flush instead of one per produced batch (IngestSettings.paced_fetch)
    paced: bool = True
    max_batch_rows: int = 100_000
    max_message_bytes: int = 262_144
    insert_attempts: int = 6
    shard: int = 0  # with shards > 1, this run loads the partitions p with p % shards == shard
    shards: int = 1
    # how a topic re-created or forgotten by the broker is recognized: "auto" (topic IDs, checked
    # against the log's fingerprints when they change or are missing) or "fingerprint" (the log alone)
    incarnations: str = "auto"


DEAD_LETTER_SAMPLE = """
SELECT error_kind AS kind, count() OVER (PARTITION BY error_kind) AS count, topic, partition, offset,
       error AS reason, substring(payload, 1, 200) AS first_200_bytes
FROM dead_letters
WHERE run_id = {run_id:String}
ORDER BY kind, topic, partition, offset
LIMIT {per_kind:UInt32} BY kind
"""


def dead_letter_sample(clickhouse: ClickHouseResource, run_id: str, per_kind: int = 3) -> "pd.DataFrame":
    """A few rejected messages of each kind from one run, with the kind's count; raw bytes escaped."""
    with clickhouse.session() as client:
        frame = client.query_df(
            DEAD_LETTER_SAMPLE,
            parameters={"run_id": run_id, "per_kind": per_kind},
            column_formats={"first_200_bytes": "bytes"},
        )
    frame["first_200_bytes"] = frame["first_200_bytes"].map(escape_bytes)
    frame["reason"] = frame["reason"].map(lambda text: escape_bytes(text.encode(), 500))
    return frame


def _report(
    context: dg.OpExecutionContext,
    stats: IngestStats,
    kind: str,
    extra: dict[str, int] | None = None,
    clickhouse: ClickHouseResource | None = None,
) -> None:
    meta = {**stats.metadata(), **(extra or {})}
    context.log.info(f"{kind} finished: {meta}")
    per_topic = table(frame(stats.per_topic()), {"lag": "what p50/p95/p99 measure, in seconds"})
    for topic, rows in stats.rows.items():
        asset = "events" if topic == EVENTS_TOPIC else topic[len(CDC_TOPIC_PREFIX) :]
        topic_meta = {k: v for k, v in meta.items() if not k.startswith(("cdc_lag", "event_to_visible"))}
        label = "event_to_visible" if topic == EVENTS_TOPIC else "cdc_lag"
        topic_meta.update({k: v for k, v in meta.items() if k.startswith(label)})
        topic_meta["rows"] = rows
        topic_meta["dead_letters_for_topic"] = stats.dead_letters.get(topic, 0)
        topic_meta["per_topic"] = per_topic
        context.log_event(
            dg.AssetMaterialization(asset_key=asset, description=f"{kind} of {topic}", metadata=topic_meta)
        )
    if stats.dead_letters:
        dead_meta: dict[str, dg.RawMetadataValue] = {
            "dead_letters": sum(stats.dead_letters.values()),
            "per_topic": dg.MetadataValue.json(dict(stats.dead_letters)),
            "kinds": dg.MetadataValue.json(dict(stats.dead_letter_kinds)),
        }
        if clickhouse is not None:
            try:
                dead_meta["samples"] = table(
                    dead_letter_sample(clickhouse, context.run_id),
                    {"first_200_bytes": "escaped: \\xNN for bytes outside printable ASCII"},
                )
            except Exception as exc:  # the counts above still tell the story
                context.log.warning(f"could not read a dead-letter sample: {exc}")
        context.log_event(
            dg.AssetMaterialization(
                asset_key="dead_letters", description=f"messages rejected by {kind}", metadata=dead_meta
            )
        )


@dg.op(tags={"kind": "kafka"})
def ingest_kafka(
    context: dg.OpExecutionContext,
    config: IngestConfig,
    clickhouse: ClickHouseResource,
    kafka: KafkaResource,
) -> None:
    """Load nova.events and nova.public.* from the committed offsets until caught up or out of time."""
    instance, run_id = context.instance, context.run_id
    host = socket.gethostname()

    def heartbeat(stats: IngestStats) -> None:
        instance.add_run_tags(
            run_id, {HEARTBEAT_TAG: f"{time.time():.0f}@{host}", "nova/messages": str(stats.messages)}
        )

    instance.add_run_tags(run_id, {ENDS_AT_TAG: f"{time.time() + config.max_run_seconds:.0f}"})
    heartbeat(IngestStats())
    settings = config.model_dump()
    loader = Loader(
        clickhouse,
        kafka,
        IngestSettings(**settings),  # IngestConfig is the launchpad face of IngestSettings
        log=context.log.info,
        run_id=run_id,
        heartbeat=heartbeat,
        log_warning=context.log.warning,
    )
    if config.shards > 1:
        context.log.info(
            f"shard {config.shard} of {config.shards}: partitions p with p % {config.shards} == {config.shard}"
        )
    loader.prepare()  # shapes, consumer, incarnations: while a predecessor still loads
    # the predecessor stops, flushes and commits first
    await_turn(instance, run_id, context.log.info, heartbeat=lambda: heartbeat(IngestStats()))
    stop = threading.Event()
    with SuccessorWatch(instance, run_id, stop, context.log.info):
        stats = loader.run(stop=stop)
    _report(context, stats, "ingestion", {}, clickhouse)


@dg.job(name="kafka_ingestion", tags={PIPELINE_TAG: "ingestion", LOADER_TAG: "kafka"})
def kafka_ingestion_job() -> None:
    """Micro-batch ingestion of Kafka into ClickHouse, exactly once (launched by kafka_ingestion_sensor)."""
    ingest_kafka()


class ReplayConfig(dg.Config):
    """Re-ingest a topic range: by offsets, or by timestamps (ISO 8601, UTC); already-loaded rows are skipped."""

    topic: str = EVENTS_TOPIC
    partitions: list[int] = []  # empty = all partitions
    start_offset: int = -1
    end_offset: int = -1  # exclusive; -1 = the high watermark now
    start_time: str = ""
    end_time: str = ""


def _timestamp_ms(value: str) -> int:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def replay_ranges(kafka: KafkaResource, cfg: ReplayConfig) -> dict[tuple[str, int], tuple[int, int | None]]:
    """Resolve a replay request into [start, end) offsets per partition (end None: up to the latest)."""
    consumer = kafka.consumer()
    try:
        topic_meta = consumer.list_topics(cfg.topic, timeout=kafka.timeout_s).topics.get(cfg.topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            raise dg.Failure(f"topic {cfg.topic!r} does not exist")
        partitions = cfg.partitions or sorted(topic_meta.partitions)
        ranges: dict[tuple[str, int], tuple[int, int | None]] = {}
        for p in partitions:
            low, _high = consumer.get_watermark_offsets(TopicPartition(cfg.topic, p), timeout=kafka.timeout_s)
            start = cfg.start_offset if cfg.start_offset >= 0 else low
            end: int | None = cfg.end_offset if cfg.end_offset >= 0 else None
            if cfg.start_time:
                found = _offset_at(consumer, cfg.topic, p, cfg.start_time, kafka.timeout_s)
                if found is None:
                    continue  # nothing this recent in the partition
                start = found
            if cfg.end_time:
                end = _offset_at(consumer, cfg.topic, p, cfg.end_time, kafka.timeout_s)
            ranges[(cfg.topic, p)] = (max(start, low), end)
        return ranges
    finally:
        consumer.close()


def _offset_at(consumer: Consumer, topic: str, partition: int, when: str, timeout_s: float) -> int | None:
    """First offset at or after a timestamp; None when no message is that recent."""
    found = consumer.offsets_for_times([TopicPartition(topic, partition, _timestamp_ms(when))], timeout=timeout_s)
    return found[0].offset if found[0].offset >= 0 else None


@dg.op(tags={"kind": "kafka"})
def replay_kafka(
    context: dg.OpExecutionContext, config: ReplayConfig, clickhouse: ClickHouseResource, kafka: KafkaResource
) -> None:
    """Re-read a range and load whatever of it is missing from ClickHouse; consumer offsets are untouched."""
    ranges = replay_ranges(kafka, config)
    context.log.info(f"replaying {ranges}")
    settings = IngestSettings(commit=False, max_run_seconds=3600, idle_exit_seconds=30, paced=False)  # bulk
    loader = Loader(
        clickhouse, kafka, settings, log=context.log.info, run_id=context.run_id, log_warning=context.log.warning
    )
    await_turn(context.instance, context.run_id, context.log.info)  # no other loader on these partitions
    with SuccessorWatch(context.instance, context.run_id, threading.Event(), context.log.info):
        stats = loader.run(ranges)
    _report(context, stats, "replay", clickhouse=clickhouse)


@dg.job(name="kafka_replay", tags={PIPELINE_TAG: "replay", LOADER_TAG: "kafka"})
def kafka_replay_job() -> None:
    """Re-ingest a Kafka topic range (offsets or timestamps) without duplicates."""
    replay_kafka()
