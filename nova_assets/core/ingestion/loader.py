"""The ingestion loop: Kafka → validate → ClickHouse in micro-batches, exactly once.

Exactly once, and why this way:
- Offsets are committed to the consumer group only after ClickHouse accepted the batch, so a
  crash never loses messages; it can only leave a loaded-but-uncommitted tail. Commits are sent
  asynchronously (a slow broker never stalls loading); a run awaits only its last one.
- Every event and dead letter row carries its Kafka coordinates. A run starts by asking
  ClickHouse which offsets at or after the committed ones are already there, and skips them,
  so that tail is never loaded twice however the new run cuts its batches (a token alone would
  need the crashed run's exact batch boundaries, which depend on what had arrived by then).
- Each insert also carries an `insert_deduplication_token` built from its offset ranges, with
  deduplication windows on the tables and `deduplicate_blocks_in_dependent_materialized_views`,
  so retrying an insert whose outcome was unknown (timeout, lost connection) is harmless for the
  table and for the materialized views.
- Coordinates include the topic's incarnation (the broker's topic ID): a topic deleted and
  created again, or a broker that forgot its topics, restarts offsets at 0. A run notices the
  new ID (kafka_incarnations), logs it at WARNING, reports it as metadata, and loads the new
  messages from the earliest offset; neither the already-loaded check nor the deduplication
  tokens match them against rows of the old incarnation.
- The log itself is the second witness (kafka_checkpoints): runs record the fingerprint of the
  last message they loaded per partition. A broker without topic IDs gets incarnations of its
  own ("fp-..."), and a run starts a new one when the message at a checkpoint's offset is another
  one, or the log ends before it. A topic ID that changes over the same messages (a log copied
  with its offsets) keeps the old incarnation instead of loading everything again.
- Messages that retention removed before they were loaded (committed offset below the log's
  start) are counted and logged at WARNING, never skipped silently.
- CDC mirrors are ReplacingMergeTree with version = LSN: re-applying a change is idempotent.
- Runs `assign()` their partitions (no group join: instant start, no rebalances) and commit under
  the group id; the sensor and the `nova/kafka-loader` concurrency limit (dagster.yaml; ingestion
  and replay runs alike) keep one loader at a time.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

from nova_assets.core import quantiles
from nova_assets.core.identifiers import chdb_path
from nova_assets.core.ingestion.messages import (
    CDC_TOPIC_PREFIX,
    EVENT_COLUMNS,
    EVENTS_TOPIC,
    MIRROR_META_COLUMNS,
    MIRROR_TABLES,
    EventBatch,
    MirrorShape,
    Rejected,
    decode_change,
    decode_events,
)
from nova_assets.core.ingestion.offsets import (
    DEFAULT_TOPIC_PATTERNS,
    PartitionLag,
    expired_unloaded,
    fingerprint,
    partition_lags,
    topic_incarnations,
    verify_checkpoints,
)
from nova_assets.core.ports import ClickHouse, Kafka
from nova_assets.errors import ConfigError, NovaError

TP = tuple[str, int]


class IngestionFailed(NovaError):
    """ClickHouse kept rejecting a batch: nothing of it was committed to Kafka."""


_INSERT_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nova-insert")  # one batch's tables
CHECKPOINT_EVERY_S = 5.0  # how often a run records its newest loaded message per partition
INCARNATION_SOURCES = ("auto", "fingerprint")


@dataclass
class IngestSettings:
    max_run_seconds: float = 300.0
    idle_exit_seconds: float = 15.0
    flush_interval_ms: int = 200
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


@dataclass
class IngestStats:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letter_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ranges: dict[TP, list[int]] = field(default_factory=dict)  # tp -> [first, last] loaded or skipped
    batches: int = 0
    bytes: int = 0
    skipped_already_loaded: int = 0
    tombstones: int = 0
    unknown_fields: int = 0
    slowest_insert_s: float = 0.0
    slowest_commit_s: float = 0.0
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
            "tombstones_ignored": self.tombstones,
            "unknown_fields_ignored": self.unknown_fields,
            "slowest_insert_s": round(self.slowest_insert_s, 3),
            "slowest_commit_s": round(self.slowest_commit_s, 3),
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


@dataclass
class _Batch:
    events: EventBatch = field(default_factory=EventBatch.empty)
    changes: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    change_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # per mirror table
    dead: list[list[Any]] = field(default_factory=list)
    dead_topics: list[str] = field(default_factory=list)
    ranges: dict[TP, list[int]] = field(default_factory=dict)
    skipped: list[tuple[str, int, int]] = field(default_factory=list)
    last: dict[TP, Any] = field(default_factory=dict)  # the newest message per partition (checkpoints)
    bytes: int = 0
    opened: float = 0.0

    def __len__(self) -> int:
        return len(self.events) + sum(len(v) for v in self.changes.values()) + len(self.dead) + len(self.skipped)

    def note(self, tp: TP, offset: int) -> None:
        span = self.ranges.get(tp)
        if span is None:
            self.ranges[tp] = [offset, offset]
        else:
            span[1] = offset

    def token(self, incarnations: dict[str, str] | None = None) -> str:
        """Deterministic in the rows it holds: topic incarnations and offset ranges, minus skipped offsets."""
        inc = incarnations or {}
        text = ",".join(f"{t}@{inc.get(t, '')}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))
        if self.skipped:
            text += "|skip:" + ",".join(f"{t}:{p}:{o}" for t, p, o in sorted(self.skipped))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Writer:
    """One background thread that flushes batches in submission order; the first error stops it."""

    def __init__(self, flush: Callable[[_Batch], None]) -> None:
        self.flush = flush
        self.queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="nova-ingest-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if self.error is None:
                try:
                    self.flush(batch)
                except BaseException as exc:  # handed to the consuming thread, which re-raises it
                    self.error = exc

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, batch: _Batch) -> None:
        """Queue a batch; blocks while one is being written and another is waiting (back-pressure)."""
        self.raise_if_failed()
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for queued batches, then re-raise the writer's error, if any."""
        self.queue.put(None)
        self.thread.join()
        self.raise_if_failed()


def _fingerprint_incarnation(topic: str, previous: str) -> str:
    """An incarnation for a broker without topic IDs, derived from the one it follows: shards that
    notice the same reset at the same time name the new log alike."""
    return "fp-" + hashlib.blake2b(f"{topic}\0{previous}".encode(), digest_size=16).hexdigest()


DEAD_LETTER_COLUMNS = ["topic", "partition", "offset", "incarnation", "key", "payload", "error", "error_kind", "run_id"]


class Loader:
    """One ingestion run's worth of consuming and loading; `run()` returns its statistics."""

    def __init__(
        self,
        clickhouse: ClickHouse,
        kafka: Kafka,
        settings: IngestSettings | None = None,
        log: Callable[[str], None] = print,
        run_id: str = "",
        heartbeat: Callable[[IngestStats], None] | None = None,
        after_flush: Callable[[dict[str, list[bytes]]], None] | None = None,
        log_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.clickhouse = clickhouse
        self.kafka = kafka
        self.settings = settings or IngestSettings()
        self.log = log
        self.log_warning = log_warning or log
        self.run_id = run_id
        self.heartbeat = heartbeat
        self.after_flush = after_flush
        self.shapes: dict[str, MirrorShape] = {}
        self.skip: dict[TP, set[int]] = {}
        self.committed: dict[TP, int] = {}  # next offset per partition, as last committed (async)
        self.ends: dict[TP, int] = {}  # a replay's exclusive end offset per partition
        self.incarnations: dict[str, str] = {}  # topic -> the broker's topic ID ('' when unknown)
        self.legacy: dict[str, bool] = {}  # topic -> rows loaded before incarnations existed are its own
        self.pending_checkpoints: dict[TP, Any] = {}  # newest loaded message per partition, not yet written
        self.checkpointed = 0.0

    # --- setup -------------------------------------------------------------------------------

    def _mirror_shapes(self) -> dict[str, MirrorShape]:
        rows = self.clickhouse.query(
            "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table IN {tables:Array(String)} ORDER BY table, position",
            parameters={"tables": MIRROR_TABLES},
        ).result_rows
        shapes: dict[str, dict[str, str]] = defaultdict(dict)
        snapshot: set[str] = set()
        for table, name, typ in rows:
            if name not in MIRROR_META_COLUMNS:
                shapes[table][name] = typ
            elif name == "snapshot":
                snapshot.add(table)
        return {table: MirrorShape(table, cols, table in snapshot) for table, cols in shapes.items()}

    def _already_loaded(self, starts: dict[TP, int], ends: dict[TP, int] | None) -> dict[TP, set[int]]:
        """Offsets at/after each start that are already in ClickHouse (events or dead letters)."""
        found: dict[TP, set[int]] = {}
        with self.clickhouse.session() as client:
            for (topic, partition), start in starts.items():
                current = self.incarnations.get(topic, "")
                # rows of this incarnation; '' rows (loaded before incarnations, or by a broker
                # without topic IDs) count only when they can belong to it
                incs = [current, ""] if (self.legacy.get(topic, True) or not current) else [current]
                params = {
                    "t": topic,
                    "p": partition,
                    "lo": start,
                    "hi": (ends or {}).get((topic, partition), 2**62),
                    "incs": incs,
                }
                sql = (
                    "SELECT offset FROM dead_letters WHERE topic = {t:String} AND partition = {p:Int32} "
                    "AND offset >= {lo:Int64} AND offset < {hi:Int64} AND incarnation IN {incs:Array(String)}"
                )
                if topic == EVENTS_TOPIC:
                    sql = (
                        "SELECT kafka_offset FROM events WHERE kafka_topic = {t:String} "
                        "AND kafka_partition = {p:Int32} AND kafka_offset >= {lo:Int64} AND kafka_offset < {hi:Int64} "
                        "AND kafka_incarnation IN {incs:Array(String)} UNION ALL " + sql
                    )
                offsets = {row[0] for row in client.query(sql, parameters=params).result_rows}
                if offsets:
                    found[(topic, partition)] = offsets
        return found

    def _check_incarnations(self, topics: list[str], stats: IngestStats) -> set[str]:
        """Settle each topic's incarnation; returns the topics whose incarnation changed (reset).

        A topic ID equal to the last one recorded is trusted as is. A changed ID, or none (a broker
        without topic IDs, a failed describe, or `incarnations="fingerprint"`), is checked against
        the log: the messages at the last checkpoints must still be there.
        """
        given = {} if self.settings.incarnations == "fingerprint" else (
            topic_incarnations(self.kafka.admin(), topics, self.kafka.timeout_s)
        )  # fmt: skip
        known = {
            row[0]: (row[1], row[2])
            for row in self.clickhouse.query(
                "SELECT topic, argMin(incarnation, seen_at), argMax(incarnation, seen_at) FROM kafka_incarnations "
                "WHERE topic IN {topics:Array(String)} GROUP BY topic",
                parameters={"topics": topics},
            ).result_rows
        }
        reset: set[str] = set()
        new_rows = []
        verifier: Consumer | None = None
        try:
            for topic in topics:
                topic_id = given.get(topic, "")
                first, last = known.get(topic, ("", ""))
                if not last:  # first sight: it also owns rows loaded before incarnations were recorded
                    current = topic_id or _fingerprint_incarnation(topic, "")
                    new_rows.append([topic, current, "", self.run_id])
                    self.incarnations[topic], self.legacy[topic] = current, True
                    continue
                if topic_id == last:
                    self.incarnations[topic], self.legacy[topic] = last, first == last
                    continue
                if verifier is None:
                    verifier = self.kafka.consumer(**{"auto.offset.reset": "error", "enable.partition.eof": False})
                verdict, reasons = verify_checkpoints(
                    verifier, topic, self._checkpoints(topic, last), self.kafka.timeout_s
                )
                why = "; ".join(reasons) or "no checkpoint to compare"
                if verdict == "reset" or (topic_id and verdict == "unknown"):
                    current = topic_id or _fingerprint_incarnation(topic, last)
                    reset.add(topic)
                    new_rows.append([topic, current, last, self.run_id])
                    stats.resets.append(f"{topic}: {last} -> {current}")
                    self.incarnations[topic], self.legacy[topic] = current, first == current
                    self.log_warning(
                        f"topic {topic} has a new incarnation ({last} -> {current}): it was deleted and created "
                        f"again, or the broker forgot it ({why}). Its offsets start over; loading it from the "
                        "earliest offset, without matching rows of the old incarnation"
                    )
                    continue
                self.incarnations[topic], self.legacy[topic] = last, first == last
                if topic_id:
                    self.log_warning(
                        f"topic {topic} has a new ID ({last} -> {topic_id}) over the same messages: the log was "
                        "copied with its offsets. Keeping its incarnation; nothing is loaded twice"
                    )
        finally:
            if verifier is not None:
                verifier.close()
        if new_rows:
            self.clickhouse.insert(
                "kafka_incarnations", new_rows, column_names=["topic", "incarnation", "previous", "run_id"]
            )
        return reset

    def _record_expired(self, lags: list[PartitionLag], stats: IngestStats) -> None:
        """Messages retention removed before they were loaded: a WARNING, run metadata, and one
        dead letter per range (kind `expired`; its payload is the range as JSON: first, last, count),
        so the loss stays on record and the kafka_log_continuity check sees it."""
        rows = []
        for lag in lags:
            lost = lag.low - lag.committed
            stats.expired[f"{lag.topic}:{lag.partition}"] = lost
            reason = (
                f"{lost} messages of {lag.topic}:{lag.partition} (offsets {lag.committed}-{lag.low - 1}) were "
                "removed by retention before they were loaded; they cannot be loaded any more"
            )
            self.log_warning(f"{reason}. Loading from the log's start; raise the topic's retention or load more often")
            rows.append(
                [lag.topic, lag.partition, lag.committed, self.incarnations.get(lag.topic, ""), b"",
                 orjson.dumps({"first": lag.committed, "last": lag.low - 1, "count": lost}), reason, "expired",
                 self.run_id]
            )  # fmt: skip
        if rows:
            token = hashlib.sha256(repr(sorted((r[0], r[1], r[2], r[3]) for r in rows)).encode()).hexdigest()[:32]
            self.clickhouse.insert(
                "dead_letters", rows, column_names=DEAD_LETTER_COLUMNS,
                settings={"insert_deduplication_token": f"expired:{token}"},
            )  # fmt: skip

    def _checkpoints(self, topic: str, incarnation: str) -> dict[int, tuple[int, str]]:
        """The newest loaded message per partition of one incarnation: partition -> (offset, fingerprint)."""
        rows = self.clickhouse.query(
            "SELECT partition, max(offset), argMax(fingerprint, offset) FROM kafka_checkpoints "
            "WHERE topic = {t:String} AND incarnation = {i:String} GROUP BY partition",
            parameters={"t": topic, "i": incarnation},
        ).result_rows
        return {int(p): (int(o), str(f)) for p, o, f in rows}

    def _write_checkpoints(self) -> None:
        """Record the newest loaded message per partition (only ever after its rows are in ClickHouse)."""
        self.checkpointed = time.monotonic()
        rows = [
            [t, self.incarnations.get(t, ""), p, msg.offset(), fingerprint(msg), self.run_id]
            for (t, p), msg in sorted(self.pending_checkpoints.items())
            if self.incarnations.get(t)
        ]
        if rows:
            self.clickhouse.insert(
                "kafka_checkpoints", rows,
                column_names=["topic", "incarnation", "partition", "offset", "fingerprint", "run_id"],
            )  # fmt: skip
        self.pending_checkpoints = {}  # only once written: a failed write is carried by the next one

    # --- the loop ------------------------------------------------------------------------------

    def run(
        self, ranges: dict[TP, tuple[int, int | None]] | None = None, stop: threading.Event | None = None
    ) -> IngestStats:
        """Ingest from committed offsets, or the given [start, end) ranges for replays (end None: until
        caught up; high watermarks are not trusted as ends, since some brokers under-report them)."""
        s = self.settings
        stats = IngestStats()
        self.shapes = self._mirror_shapes()
        consumer: Consumer = self.kafka.consumer(**{"enable.partition.eof": False})
        try:
            if ranges is None:
                lags = [
                    p
                    for p in partition_lags(consumer, s.topic_patterns, timeout_s=self.kafka.timeout_s)
                    if s.owns(p.partition)
                ]
                starts = {(p.topic, p.partition): p.start for p in lags}
                ends: dict[TP, int] | None = None
            else:
                lags = []
                starts = {tp: r[0] for tp, r in ranges.items()}
                ends = {tp: r[1] for tp, r in ranges.items() if r[1] is not None}
            if not starts:
                self.log("no matching topics yet; nothing to ingest")
                return stats
            reset = self._check_incarnations(sorted({t for t, _ in starts}), stats)
            for lag in lags:  # committed offsets of an old incarnation mean nothing in the new one
                if lag.topic in reset:
                    starts[(lag.topic, lag.partition)] = lag.low
            self._record_expired(expired_unloaded(lags, reset), stats)
            self.ends = dict(ends or {})
            self.skip = self._already_loaded(starts, ends)
            if self.skip:
                self.log(f"skipping {sum(map(len, self.skip.values()))} offsets already in ClickHouse")
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            pending = None if ends is None else {tp: end for tp, end in ends.items() if end > starts[tp]}
            open_ended = ranges is not None and len(ends or {}) < len(starts)
            self._loop(consumer, stats, pending, stop, open_ended)
        finally:
            consumer.close()
            stats.finished = time.time()
        return stats

    def _loop(
        self,
        consumer: Consumer,
        stats: IngestStats,
        pending: dict[TP, int] | None,
        stop: threading.Event | None,
        open_ended: bool = False,
    ) -> None:
        """Consume and flush until stopped, out of time, idle (normal runs) or past every range end (replays).

        Batches are written by one writer thread, in order, while this thread decodes the next
        one (chDB and librdkafka release the GIL); at most two batches are ever uncommitted.
        """
        s = self.settings
        deadline = time.monotonic() + s.max_run_seconds
        last_message = time.monotonic()
        last_beat = 0.0
        batch = _Batch()
        flush_every = s.flush_interval_ms / 1000.0
        writer = _Writer(lambda b: self._flush(consumer, b, stats))
        try:
            while True:
                writer.raise_if_failed()
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    break
                if now >= deadline:
                    self.log(f"run window of {s.max_run_seconds:g} s is over")
                    break
                if pending is not None and not pending and not open_ended and not len(batch):
                    break
                if not len(batch) and now - last_message >= s.idle_exit_seconds:
                    self.log(f"caught up and idle for {s.idle_exit_seconds:g} s")
                    break
                wait = 0.05 if not len(batch) else max(0.0, min(0.05, batch.opened + flush_every - now))
                messages = consumer.consume(num_messages=min(10_000, s.max_batch_rows), timeout=wait)
                if messages:
                    last_message = time.monotonic()
                    if not len(batch):
                        batch.opened = last_message
                    self._absorb(messages, batch, stats, pending, consumer)
                if len(batch) and (time.monotonic() - batch.opened >= flush_every or len(batch) >= s.max_batch_rows):
                    writer.submit(batch)
                    batch = _Batch()
                if self.heartbeat is not None and time.monotonic() - last_beat >= 5.0:
                    last_beat = time.monotonic()
                    self.heartbeat(stats)
            if len(batch):
                writer.submit(batch)
        finally:
            try:
                writer.close()
            finally:
                self._commit_final(consumer)
                try:
                    self._write_checkpoints()
                except Exception as exc:  # the rows are loaded; only the next run's reset check is older
                    self.log(f"writing kafka_checkpoints failed ({exc}); the next run compares older ones")

    def _commit_final(self, consumer: Consumer) -> None:
        """Commit the run's last loaded offsets and wait for the answer (bounded by the broker's timeout)."""
        if not self.settings.commit or not self.committed:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.committed.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # loaded rows are safe: the next run skips them in ClickHouse
            self.log(f"final offset commit failed ({exc}); the next run re-reads and skips what is loaded")

    def _absorb(
        self, messages: list[Any], batch: _Batch, stats: IngestStats, pending: dict[TP, int] | None, consumer: Consumer
    ) -> None:
        """Route a consume() result into the batch: events are validated together, CDC one by one."""
        s = self.settings
        if pending is None and not self.skip and self._absorb_events_only(messages, batch, stats):
            return
        ev_msgs: list[Any] = []
        ev_values: list[bytes | None] = []
        ev_partitions: list[int] = []
        ev_offsets: list[int] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            tp = (topic, partition)
            end = self.ends.get(tp)
            if end is not None:  # a replay: exactly [start, end) of each partition, however much follows
                if offset >= end:
                    if pending is not None:
                        pending.pop(tp, None)
                    consumer.pause([TopicPartition(topic, partition)])
                    continue
                if offset == end - 1 and pending is not None:
                    pending.pop(tp, None)
            batch.note(tp, offset)
            batch.last[tp] = msg
            skip = self.skip.get(tp)
            if skip is not None and offset in skip:
                stats.skipped_already_loaded += 1
                batch.skipped.append((topic, partition, offset))
                continue
            value = msg.value()
            batch.bytes += len(value) if value is not None else 0
            if topic == EVENTS_TOPIC:
                ev_msgs.append(msg)
                ev_values.append(value)
                ev_partitions.append(partition)
                ev_offsets.append(offset)
                continue
            try:
                if value is not None and len(value) > s.max_message_bytes:
                    size = len(value)
                    raise Rejected(
                        "oversized", f"payload of {size} bytes exceeds {s.max_message_bytes} (max_message_bytes)"
                    )
                if not topic.startswith(CDC_TOPIC_PREFIX):
                    raise Rejected("unknown_topic", f"topic {topic} has no loader")
                table = topic[len(CDC_TOPIC_PREFIX) :]
                shape = self.shapes.get(table)
                if shape is None:
                    raise Rejected("unknown_topic", f"no ClickHouse mirror table for topic {topic}")
                change = decode_change(value, shape)
                if change is None:
                    stats.tombstones += 1
                    continue
                batch.changes[table].append(change.row)
                if not change.snapshot:  # a snapshot row's source time is its read: no commit lag
                    batch.change_ms[table].append(change.source_ms)
            except Rejected as rejected:
                self._dead(batch, stats, msg, rejected)
        if ev_values:
            bad = decode_events(ev_values, ev_partitions, ev_offsets, EVENTS_TOPIC, batch.events, s.max_message_bytes)
            for index, rejected in bad:
                self._dead(batch, stats, ev_msgs[index], rejected)

    def _absorb_events_only(self, messages: list[Any], batch: _Batch, stats: IngestStats) -> bool:
        """Fast path for the common case, a clean run of nova.events: column-wise, no per-message branches."""
        if any(m.error() is not None for m in messages) or any(m.topic() != EVENTS_TOPIC for m in messages):
            return False
        values = [m.value() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        for msg, partition, offset in zip(messages, partitions, offsets, strict=True):  # first and last per partition
            tp = (EVENTS_TOPIC, partition)
            span = batch.ranges.get(tp)
            if span is None:
                batch.ranges[tp] = [offset, offset]
            else:
                span[1] = offset
            batch.last[tp] = msg
        batch.bytes += sum(len(v) for v in values if v is not None)
        bad = decode_events(values, partitions, offsets, EVENTS_TOPIC, batch.events, self.settings.max_message_bytes)
        for index, rejected in bad:
            self._dead(batch, stats, messages[index], rejected)
        return True

    def _dead(self, batch: _Batch, stats: IngestStats, msg: Any, rejected: Rejected) -> None:
        batch.dead.append(
            [
                msg.topic(),
                msg.partition(),
                msg.offset(),
                self.incarnations.get(msg.topic(), ""),
                msg.key() or b"",
                msg.value() or b"",
                str(rejected),
                rejected.kind,
                self.run_id,
            ]
        )
        batch.dead_topics.append(msg.topic())
        stats.dead_letter_kinds[rejected.kind] += 1

    def _insert(self, batch: _Batch) -> float:
        """Write one batch (idempotent under its token); returns when it became visible (epoch s)."""
        token = batch.token(self.incarnations)
        dedup = {"deduplicate_blocks_in_dependent_materialized_views": 1}
        with self.clickhouse.session() as client:
            inserts: list[Callable[[], object]] = []
            if len(batch.events):
                block = batch.events.encode(kafka_incarnation=self.incarnations.get(EVENTS_TOPIC, ""))
                inserts.append(
                    partial(
                        client.raw_insert, "events", [*EVENT_COLUMNS, "kafka_incarnation"], insert_block=block,
                        fmt="JSONColumns", settings={**dedup, "insert_deduplication_token": f"{token}:events"},
                    )
                )  # fmt: skip
            for table, rows in batch.changes.items():
                inserts.append(
                    partial(
                        client.raw_insert, table, self.shapes[table].insert_columns, insert_block=b"\n".join(rows),
                        fmt="JSONEachRow", settings={**dedup, "insert_deduplication_token": f"{token}:{table}"},
                    )
                )  # fmt: skip
            if batch.dead:
                inserts.append(
                    partial(
                        client.insert, "dead_letters", batch.dead, column_names=DEAD_LETTER_COLUMNS,
                        settings={"insert_deduplication_token": f"{token}:dead_letters"},
                    )
                )  # fmt: skip
            if len(inserts) > 1 and chdb_path(self.clickhouse.url) is None:
                # a server takes the tables of one batch side by side: a CDC batch touching five
                # mirrors is visible after its slowest insert, not after the sum of them. Each
                # insert carries its own dedup token, so a retry of the batch stays exactly once.
                futures = [_INSERT_POOL.submit(insert) for insert in inserts]
                wait(futures)  # all of them end before a failure is raised (and the batch retried)
                for future in futures:
                    future.result()
            else:
                for insert in inserts:
                    insert()
        return time.time()

    def _flush(self, consumer: Consumer, batch: _Batch, stats: IngestStats) -> None:
        s = self.settings
        has_rows = bool(len(batch.events) or batch.changes or batch.dead)
        visible = time.time()
        if has_rows:
            try:
                for attempt in Retrying(
                    stop=stop_after_attempt(s.insert_attempts),
                    wait=wait_exponential(multiplier=0.25, max=s.retry_max_wait_s),
                    reraise=False,
                ):
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            self.log(f"retrying batch insert (attempt {attempt.retry_state.attempt_number})")
                        began = time.monotonic()
                        visible = self._insert(batch)
                        stats.slowest_insert_s = max(stats.slowest_insert_s, time.monotonic() - began)
            except RetryError as exc:
                cause = exc.last_attempt.exception()
                raise IngestionFailed(
                    f"ClickHouse rejected a batch {s.insert_attempts} times; offsets not committed "
                    f"({', '.join(f'{t}:{p}:{a}-{b}' for (t, p), (a, b) in sorted(batch.ranges.items()))}): {cause}"
                ) from cause
        if s.commit:
            # Asynchronous: the loader never waits on a commit response (a broker under load took
            # 30 s to answer one). A commit that is late or lost costs nothing but a re-read: the
            # next run asks ClickHouse which offsets are loaded and skips them. The run's last
            # offsets are committed synchronously when it ends (`_commit_final`).
            offsets = [TopicPartition(t, p, last + 1) for (t, p), (_first, last) in batch.ranges.items()]
            began = time.monotonic()
            consumer.commit(offsets=offsets, asynchronous=True)
            stats.slowest_commit_s = max(stats.slowest_commit_s, time.monotonic() - began)
            for tp in offsets:
                self.committed[(tp.topic, tp.partition)] = tp.offset
        self.pending_checkpoints.update(batch.last)  # fingerprinted when written, not every flush
        if time.monotonic() - self.checkpointed >= CHECKPOINT_EVERY_S:
            try:
                self._write_checkpoints()
            except Exception as exc:  # never a reason to stop loading: the next write carries them
                self.log(f"writing kafka_checkpoints failed ({exc}); retrying with the next batch")
        visible_ms = visible * 1000.0
        if len(batch.events):
            e2v = visible_ms - np.asarray(batch.events.event_ms, dtype=np.float64)
            stats.e2v_ms.append(e2v)
            stats.lag_ms_by_topic[EVENTS_TOPIC].append(e2v)
            stats.unknown_fields += batch.events.unknown_fields
        for table, source_ms in batch.change_ms.items():
            lag = visible_ms - np.asarray(source_ms, dtype=np.float64)
            stats.cdc_lag_ms.append(lag)
            stats.lag_ms_by_topic[f"{CDC_TOPIC_PREFIX}{table}"].append(lag)
        for topic in {t for t, _p in batch.ranges}:
            stats.batches_by_topic[topic] += 1
        if len(batch.events):
            stats.rows[EVENTS_TOPIC] += len(batch.events)
        for table, rows in batch.changes.items():
            stats.rows[f"{CDC_TOPIC_PREFIX}{table}"] += len(rows)
        for topic in batch.dead_topics:
            stats.dead_letters[topic] += 1
        for tp, (first, last) in batch.ranges.items():
            span = stats.ranges.get(tp)
            stats.ranges[tp] = [first, last] if span is None else [span[0], last]
        stats.batches += 1
        stats.bytes += batch.bytes
        if self.after_flush is not None and batch.changes:
            try:
                self.after_flush(batch.changes)
            except Exception as exc:  # a cache problem must never stop or fail ingestion
                self.log(f"after-flush hook failed (data is loaded and committed): {exc}")
