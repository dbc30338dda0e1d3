"""The ingestion loop: Kafka → validate → ClickHouse in micro-batches, exactly once (why: the package's docstring)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

from nova_assets.core.identifiers import chdb_path
from nova_assets.core.ingestion.batch import DEAD_LETTER_COLUMNS, Batch, Lanes, Writer
from nova_assets.core.ingestion.config import (
    CHECKPOINT_EVERY_S,
    IngestionFailed,
    IngestSettings,
)
from nova_assets.core.ingestion.messages import (
    CDC_TOPIC_PREFIX,
    EVENT_COLUMNS,
    EVENTS_TOPIC,
    MIRROR_META_COLUMNS,
    MIRROR_TABLES,
    MirrorShape,
    Rejected,
    decode_change,
    decode_events,
)
from nova_assets.core.ingestion.offsets import PACED_BELOW, PartitionWatch, behind_by, behind_checkpoints
from nova_assets.core.ingestion.resume import Resume
from nova_assets.core.ingestion.stats import IngestStats
from nova_assets.core.ports import ClickHouse, Kafka

TP = tuple[str, int]


_INSERT_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nova-insert")  # one batch's tables


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
        log_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.clickhouse, self.kafka, self.settings = clickhouse, kafka, settings or IngestSettings()
        self.log, self.log_warning = log, log_warning or log
        self.run_id, self.heartbeat = run_id, heartbeat
        self.shapes: dict[str, MirrorShape] = {}
        self.skip: dict[TP, set[int]] = {}
        self.committed: dict[TP, int] = {}  # next offset per partition, as last committed (async)
        self.ends: dict[TP, int] = {}  # a replay's exclusive end offset per partition
        s = self.settings
        self.resume = Resume(clickhouse, kafka, run_id, log, self.log_warning, s.incarnations, s.owns, s.topic_patterns)
        self.incarnations = self.resume.incarnations  # topic -> incarnation, settled by resume.positions()
        self._prepared: tuple[Consumer, IngestStats] | None = None

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

    def prepare(self, settle: bool = True) -> None:
        """What a run can do before its turn to load (a successor, while its predecessor still
        loads): the mirrors' shapes, the consumer and, with `settle`, the topics' incarnations. What
        depends on committed offsets waits for `run()`."""
        stats = IngestStats()
        self.shapes = self._mirror_shapes()
        answered = partial(stats.commit_answered, warn=self.log_warning)  # asynchronous commits' answers
        self._consumer_config = {"enable.partition.eof": False, "on_commit": answered}
        consumer: Consumer = self.kafka.consumer(**self._consumer_config)
        try:
            if settle:
                self.resume.settle(consumer, stats)
        except BaseException:
            consumer.close()
            raise
        self._prepared = (consumer, stats)

    # --- the loop ------------------------------------------------------------------------------

    def run(
        self, ranges: dict[TP, tuple[int, int | None]] | None = None, stop: threading.Event | None = None
    ) -> IngestStats:
        """Ingest from committed offsets, or the given [start, end) ranges for replays (end None: until
        caught up; high watermarks are not trusted as ends, since some brokers under-report them)."""
        if self._prepared is None:
            self.prepare(settle=False)
        assert self._prepared is not None
        consumer, stats = self._prepared
        self._prepared = None
        try:
            start = self.resume.positions(consumer, ranges, stats)
            if start is None:
                self.log("no matching topics yet; nothing to ingest")
                return stats
            self.skip, self.ends = start.skip, start.ends
            if ranges is None:
                self.committed.update(behind_checkpoints(consumer, start.starts, self.log))
                if self.settings.paced and behind_by(consumer, start.starts) < PACED_BELOW:  # at the head
                    paced = self.kafka.consumer(**self._consumer_config, **self.settings.paced_fetch())
                    consumer.close()
                    consumer, stats.paced = paced, True
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in start.starts.items()])
            self._loop(consumer, stats, start.pending, stop, start.open_ended)
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
        lanes = Lanes(s.flush_interval_ms / 1000.0, s.cdc_flush_interval_ms / 1000.0)
        n, behind = min(10_000, s.max_batch_rows), False  # a full consume(): behind, no holding back
        writer = Writer(lambda b: self._flush(consumer, b, stats))
        watch = PartitionWatch(consumer) if pending is None else None  # replays read fixed ranges
        try:
            while True:
                writer.raise_if_failed()
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    break
                if now >= deadline:
                    self.log(f"run window of {s.max_run_seconds:g} s is over")
                    break
                if pending is not None and not pending and not open_ended and not len(lanes):
                    break
                if not len(lanes) and now - last_message >= s.idle_exit_seconds:
                    self.log(f"caught up and idle for {s.idle_exit_seconds:g} s")
                    break
                hold = lanes.events_due_in(now) if stats.paced and not behind else None
                if hold:  # an events batch is open: what arrives waits with the consumer until it is due
                    (time.sleep if stop is None else stop.wait)(hold)
                messages = consumer.consume(num_messages=n, timeout=0 if hold is not None else lanes.wait(now, 0.05))
                behind = len(messages) >= n
                if messages:
                    last_message = time.monotonic()
                    for batch, part in lanes.split(messages, last_message):
                        self._absorb(part, batch, stats, pending, consumer)
                for batch in lanes.take_due(time.monotonic(), s.max_batch_rows):
                    writer.submit(batch)
                if time.monotonic() - last_beat >= 5.0:
                    last_beat = time.monotonic()
                    if self.heartbeat is not None:
                        self.heartbeat(stats)
                    if watch is not None and (grown := watch.grown()):
                        self.log(f"partitions {grown} appeared after this run started: ending it for the next one")
                        break
            for batch in lanes.take_all():
                writer.submit(batch)
        finally:
            try:
                writer.close()
            finally:
                self._commit_final(consumer)
                try:
                    self.resume.write_checkpoints()
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
        self, messages: list[Any], batch: Batch, stats: IngestStats, pending: dict[TP, int] | None, consumer: Consumer
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
            for index, why in bad:
                self._dead(batch, stats, ev_msgs[index], why)

    def _absorb_events_only(self, messages: list[Any], batch: Batch, stats: IngestStats) -> bool:
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

    def _dead(self, batch: Batch, stats: IngestStats, msg: Any, rejected: Rejected) -> None:
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

    def _insert(self, batch: Batch) -> float:
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

    def _flush(self, consumer: Consumer, batch: Batch, stats: IngestStats) -> None:
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
        self.resume.pending_checkpoints.update(batch.last)  # fingerprinted when written, not every flush
        if time.monotonic() - self.resume.checkpointed >= CHECKPOINT_EVERY_S:
            try:
                self.resume.write_checkpoints()
            except Exception as exc:  # never a reason to stop loading: the next write carries them
                self.log(f"writing kafka_checkpoints failed ({exc}); retrying with the next batch")
        stats.record(batch, visible)
