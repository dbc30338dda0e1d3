"""Where a run starts, in one step: the topics' incarnations, what retention removed unloaded, and
the offsets already in ClickHouse; and, as the run loads, its checkpoints in the log.

`Resume.positions()` is the one entry: it hands the loader the start offset of every partition it
owns and the offsets to skip, after settling each topic's incarnation (a broker that forgot its
topics, or a topic created again, restarts offsets at 0) and recording messages that retention
removed before they were loaded. The loader then only consumes, decodes and inserts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer

from nova_assets.core.ingestion.batch import DEAD_LETTER_COLUMNS
from nova_assets.core.ingestion.messages import EVENTS_TOPIC
from nova_assets.core.ingestion.offsets import (
    DEFAULT_TOPIC_PATTERNS,
    PartitionLag,
    expired_unloaded,
    fingerprint,
    matching_partitions,
    partition_lags,
    topic_incarnations,
    verify_checkpoints,
)
from nova_assets.core.ingestion.stats import IngestStats
from nova_assets.core.ports import ClickHouse, Kafka

TP = tuple[str, int]


def _fingerprint_incarnation(topic: str, previous: str) -> str:
    """An incarnation for a broker without topic IDs, derived from the one it follows: shards that
    notice the same reset at the same time name the new log alike."""
    return "fp-" + hashlib.blake2b(f"{topic}\0{previous}".encode(), digest_size=16).hexdigest()


@dataclass
class Positions:
    """Where a run starts: offsets per partition, offsets to skip, and a replay's ends."""

    starts: dict[TP, int]
    skip: dict[TP, set[int]]
    ends: dict[TP, int]  # a replay's exclusive end offset per partition (empty: until stopped)
    pending: dict[TP, int] | None  # replay partitions not yet at their end (None: a normal run)
    open_ended: bool  # a replay with partitions read until caught up


class Resume:
    """Start positions and checkpoints of one loader run (see the module docstring)."""

    def __init__(
        self,
        clickhouse: ClickHouse,
        kafka: Kafka,
        run_id: str,
        log: Callable[[str], None],
        log_warning: Callable[[str], None],
        mode: str = "auto",
        owns: Callable[[int], bool] = lambda _partition: True,
        topic_patterns: tuple[str, ...] = DEFAULT_TOPIC_PATTERNS,
    ) -> None:
        self.clickhouse, self.kafka, self.run_id = clickhouse, kafka, run_id
        self.log, self.log_warning, self.mode, self.owns = log, log_warning, mode, owns
        self.topic_patterns = topic_patterns
        self.incarnations: dict[str, str] = {}  # topic -> the broker's topic ID ('' when unknown)
        self.legacy: dict[str, bool] = {}  # topic -> rows loaded before incarnations existed are its own
        self.pending_checkpoints: dict[TP, Any] = {}  # newest loaded message per partition, not yet written
        self.checkpointed = 0.0
        self.settled: dict[str, bool] = {}  # topic -> its incarnation was reset (settled ahead of the turn)

    def settle(self, consumer: Consumer, stats: IngestStats) -> None:
        """Settle the incarnations of the matching topics now: they do not depend on committed
        offsets, so a successor does it while its predecessor still loads."""
        topics = sorted({tp.topic for tp in matching_partitions(consumer, self.topic_patterns, self.kafka.timeout_s)})
        if topics:
            reset = self._check_incarnations(topics, stats)
            self.settled.update({t: t in reset for t in topics})

    def positions(
        self, consumer: Consumer, ranges: dict[TP, tuple[int, int | None]] | None, stats: IngestStats
    ) -> Positions | None:
        """The run's start: committed offsets (or a replay's ranges) corrected for resets, retention
        and rows already loaded. None when there is no matching topic yet."""
        if ranges is None:
            found = partition_lags(consumer, self.topic_patterns, timeout_s=self.kafka.timeout_s)
            lags = [p for p in found if self.owns(p.partition)]
            starts = {(p.topic, p.partition): p.start for p in lags}
            ends: dict[TP, int] | None = None
        else:
            lags = []
            starts = {tp: r[0] for tp, r in ranges.items()}
            ends = {tp: r[1] for tp, r in ranges.items() if r[1] is not None}
        if not starts:
            return None
        topics = sorted({t for t, _ in starts})
        if all(t in self.settled for t in topics):
            reset = {t for t in topics if self.settled[t]}
        else:
            reset = self._check_incarnations(topics, stats)
        for lag in lags:  # committed offsets of an old incarnation mean nothing in the new one
            if lag.topic in reset:
                starts[(lag.topic, lag.partition)] = lag.low
        self._record_expired(expired_unloaded(lags, reset), stats)
        skip = self._already_loaded(starts, ends)
        if skip:
            self.log(f"skipping {sum(map(len, skip.values()))} offsets already in ClickHouse")
        pending = None if ends is None else {tp: end for tp, end in ends.items() if end > starts[tp]}
        open_ended = ranges is not None and len(ends or {}) < len(starts)
        return Positions(starts, skip, dict(ends or {}), pending, open_ended)

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
        given = {} if self.mode == "fingerprint" else (
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

    def write_checkpoints(self) -> None:
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
