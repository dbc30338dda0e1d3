"""Topic discovery, watermarks and consumer-group offsets: shared by the sensor and the runs.

Nothing here polls messages: these are metadata requests with short timeouts, safe inside a
sensor tick.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from nova_assets.core.ingestion.messages import CDC_TOPIC_PREFIX, EVENTS_TOPIC
from nova_assets.core.ingestion.stats import TP

DEFAULT_TOPIC_PATTERNS = (EVENTS_TOPIC, f"{CDC_TOPIC_PREFIX}*")


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # -1 when the group never committed here
    low: int
    high: int
    reset: bool = False  # the log now ends before the committed offset: the broker forgot it, or it was re-created

    @property
    def start(self) -> int:
        """Where ingestion resumes: the committed offset, or the earliest retained one (also for a
        reset log, whose committed offset belongs to the old one)."""
        return self.committed if self.committed >= 0 and not self.reset else self.low

    @property
    def lag(self) -> int:
        return max(0, self.high - self.start)


def matching_partitions(
    consumer: Consumer, patterns: tuple[str, ...] | list[str] = DEFAULT_TOPIC_PATTERNS, timeout_s: float = 5.0
) -> list[TopicPartition]:
    """Every partition of the topics matching `patterns` (one metadata request)."""
    metadata = consumer.list_topics(timeout=timeout_s)
    return [
        TopicPartition(name, pid)
        for name, topic in sorted(metadata.topics.items())
        if any(fnmatch.fnmatchcase(name, pat) for pat in patterns) and topic.error is None
        for pid in sorted(topic.partitions)
    ]


class PartitionWatch:
    """Partitions that appear in a run's topics after it started: the topic grew, or came back with
    more partitions after a broker forgot it. A run assigns what it saw at its start (a shard only
    its share), so the partitions then known, its own or another shard's, are never news."""

    def __init__(self, consumer: Consumer, timeout_s: float = 2.0) -> None:
        self.consumer, self.timeout_s = consumer, timeout_s
        self.topics = {tp.topic for tp in consumer.assignment()}
        self.known: set[TP] | None = self._current()

    def _current(self) -> set[TP] | None:
        try:
            metadata = self.consumer.list_topics(timeout=self.timeout_s)
        except KafkaException:
            return None  # the broker is away: the fetches will say so
        return {
            (name, pid)
            for name, topic in metadata.topics.items()
            if name in self.topics and topic.error is None
            for pid in topic.partitions
        }

    def grown(self) -> list[TP]:
        now = self._current()
        if now is None:
            return []
        if self.known is None:  # no answer at the start: this is the baseline
            self.known = now
        return sorted(now - self.known)


def partition_lags(
    consumer: Consumer,
    patterns: tuple[str, ...] | list[str] = DEFAULT_TOPIC_PATTERNS,
    timeout_s: float = 5.0,
    verify_s: float = 0.0,
    verify_all: bool = False,
) -> list[PartitionLag]:
    """Committed offset and watermarks of every partition of the matching topics.

    With `verify_s`, partitions that look caught up are checked by a fetch (at most `verify_s`
    seconds): some brokers under-report the high watermark in ListOffsets. `verify_all` checks the
    lagging ones too, where the count of unloaded messages must be right, not only non-zero.
    """
    tps = matching_partitions(consumer, patterns, timeout_s)
    if not tps:
        return []
    committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=timeout_s)}
    out = []
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
        offset = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
        out.append(PartitionLag(tp.topic, tp.partition, offset if offset >= 0 else -1, low, high))
    if verify_s > 0:
        out = _verified(consumer, out, verify_s, verify_all)
    return out


def _verified(consumer: Consumer, lags: list[PartitionLag], timeout_s: float, verify_all: bool) -> list[PartitionLag]:
    """The lags with each quiet partition's end as a fetch reports it (see `fetched_highs`).

    A committed offset past the listed end is fetched from the listed end's last message: this
    broker lists the newest batch's start + 1, so a caught-up partition looks like that every time,
    and the fetch tells it from a log that now really ends before the committed offset (the broker
    forgot it, or it was re-created), whose messages are all unloaded.
    """
    asks: dict[TP, int] = {}
    for p in lags:
        if verify_all or p.lag == 0:
            probe = p.committed > p.high > p.low
            asks[(p.topic, p.partition)] = p.high - 1 if probe else p.start
    fetched = fetched_highs(consumer, asks, timeout_s) if asks else {}
    out = []
    for p in lags:
        end = fetched.get((p.topic, p.partition), -1)
        reset = 0 <= end < p.committed
        out.append(PartitionLag(p.topic, p.partition, p.committed, p.low, end if reset else max(p.high, end), reset))
    return out


def expired_unloaded(lags: list[PartitionLag], reset: set[str] | frozenset[str] = frozenset()) -> list[PartitionLag]:
    """Partitions whose committed offset is below the log's start: retention removed messages that
    were never loaded (a consumer would jump to the start without a word). Reset topics excluded:
    their committed offsets belong to the old incarnation."""
    return [p for p in lags if p.topic not in reset and 0 <= p.committed < p.low]


def fetched_highs(
    consumer: Consumer, starts: dict[tuple[str, int], int], timeout_s: float
) -> dict[tuple[str, int], int]:
    """High watermarks as fetch responses carry them, for partitions with a message at/after `start`.

    ListOffsets is not trusted alone: the local Tansu (in memory and on S3) answers it with the start
    of the most recently written batch + 1 (80,626 for a topic holding 200,000), which would hide lag
    behind a committed offset inside that batch. A fetch from the committed offset tells the truth.
    """
    consumer.assign([TopicPartition(t, p, start) for (t, p), start in starts.items()])
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < len(starts) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=min(0.1, max(0.0, deadline - time.monotonic()))):
                topic, partition = msg.topic(), msg.partition()
                if msg.error() is None and topic is not None and partition is not None:
                    seen.add((topic, partition))
        highs = {}
        for topic, partition in seen:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            highs[(topic, partition)] = high
        return highs
    finally:
        consumer.unassign()


def describe_ranges(lags: list[PartitionLag]) -> str:
    """Compact `topic:partition:start-end` list for run tags and logs."""
    return ",".join(f"{p.topic}:{p.partition}:{p.start}-{p.high}" for p in lags if p.lag > 0)


def topic_incarnations(admin: AdminClient, topics: list[str], timeout_s: float = 5.0) -> dict[str, str]:
    """Each topic's ID as the broker gives it: a new ID means the topic was re-created or forgotten.

    A broker without topic IDs (or a failing describe) gives '': incarnations are then unknown and
    the loader falls back to offsets alone, as before.
    """
    if not topics:
        return {}
    out = dict.fromkeys(topics, "")
    try:
        futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout_s)
        for topic, future in futures.items():
            topic_id = future.result(timeout=timeout_s).topic_id
            out[topic] = str(topic_id) if topic_id is not None else ""
    except Exception:  # unknown: callers treat '' as "cannot tell", never as a reset
        pass
    return out


def fingerprint(msg: Any) -> str:
    """What identifies a message beyond its offset: key, value and timestamp (a re-created topic's
    message at the same offset differs in at least one of them)."""
    key, value = msg.key() or b"", msg.value() or b""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(key).to_bytes(8, "big"))
    digest.update(key)
    digest.update(value)
    digest.update(msg.timestamp()[1].to_bytes(8, "big", signed=True))
    return digest.hexdigest()


Verdict = Literal["same", "reset", "unknown"]


def verify_checkpoints(
    consumer: Consumer, topic: str, checkpoints: dict[int, tuple[int, str]], timeout_s: float = 5.0
) -> tuple[Verdict, list[str]]:
    """Is the topic still the log its checkpoints were taken from? With one reason per partition.

    Each checkpoint is (offset, fingerprint) of a loaded message. Per partition: the same message
    at that offset → same; another message there, or a log that now ends at or before it → reset;
    a message past it (compaction) or an offset below the retained start (retention) → unknown.
    Any reset makes the topic reset; else any match makes it the same. The consumer must use
    `auto.offset.reset=error`, so an offset out of range is reported instead of silently moved.
    """
    if not checkpoints:
        return "unknown", []
    meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    exists = set(meta.partitions) if meta is not None and meta.error is None else set()
    found: dict[int, tuple[str, str]] = {
        p: ("reset", f"{p}: the partition no longer exists") for p in checkpoints if p not in exists
    }  # a topic never loses partitions: it was re-created with fewer
    checkpoints = {p: c for p, c in checkpoints.items() if p in exists}
    asks: dict[int, int] = {}
    for p, (offset, _fp) in checkpoints.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
        if low <= offset < high:
            asks[p] = offset
        elif offset >= high > low:  # the listed end can be the newest batch's start + 1: fetch from there
            asks[p] = high - 1
        else:
            found[p] = _placed(p, offset, low, high)
    consumer.assign([TopicPartition(topic, p, at) for p, at in asks.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while any(p not in found for p in asks) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                partition = msg.partition()
                if partition is None or partition not in asks or partition in found:
                    continue
                offset, expected = checkpoints[partition]
                err = msg.error()
                if err is not None:
                    if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                        found[partition] = _out_of_range(consumer, topic, partition, offset, timeout_s)
                    continue
                at = msg.offset()
                if at is not None and at < offset:  # before the checkpoint: the fetch carries the true end
                    low, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                    if end > offset:
                        continue  # the checkpoint's message comes later in this fetch or the next
                    found[partition] = _placed(partition, offset, low, end)
                elif at == offset:
                    same = fingerprint(msg) == expected
                    found[partition] = ("same", "") if same else ("reset", f"{partition}: another message at {offset}")
                elif at is not None and at > offset:
                    found[partition] = ("unknown", f"{partition}: no message at {offset} (compacted?)")
                consumer.pause([TopicPartition(topic, partition)])
    finally:
        consumer.resume([TopicPartition(topic, p) for p in asks])  # a pause outlives the assignment
        consumer.unassign()
    for partition, (offset, _fp) in checkpoints.items():
        if partition not in found:  # nothing at or after the offset within the time: where does the log end?
            found[partition] = _out_of_range(consumer, topic, partition, offset, timeout_s)
    verdicts = {v for v, _ in found.values()}
    reasons = [f"{topic}:{why}" for _v, why in found.values() if why]
    if "reset" in verdicts:
        return "reset", reasons
    return ("same" if "same" in verdicts else "unknown"), reasons


def _out_of_range(consumer: Consumer, topic: str, partition: int, offset: int, timeout_s: float) -> tuple[str, str]:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s, cached=False)
    return _placed(partition, offset, low, high)


def _placed(partition: int, offset: int, low: int, high: int) -> tuple[str, str]:
    """Where a checkpoint's offset lies against a log's start and end: the verdict and its reason."""
    if offset < low:
        return "unknown", f"{partition}: offset {offset} is below the retained start {low}"
    if offset >= high:
        return "reset", f"{partition}: the log ends at {high}, before the loaded offset {offset}"
    return "unknown", f"{partition}: no answer for offset {offset} (log {low}-{high})"


#: a run that starts fewer messages than this behind the head is paced (`IngestSettings.paced_fetch`);
#: one further behind catches up with unpaced fetches (a paced one reads at most the broker's 5 MB per
#: fetch backoff: 87k events/s where unpaced reads ~200k)
PACED_BELOW = 20_000


def behind_by(consumer: Consumer, starts: dict[TP, int], timeout_s: float = 5.0) -> int:
    """How many messages lie between these start offsets and the partitions' high watermarks (the
    local Tansu reports its last batch's start + 1: up to a batch short, enough to tell a backlog)."""
    behind = 0
    for (topic, partition), start in starts.items():
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        behind += max(0, high - start)
    return behind


def behind_checkpoints(consumer: Consumer, starts: dict[TP, int], log: Callable[[str], None]) -> dict[TP, int]:
    """The partitions whose group-committed offset is behind where the checkpoints start the run (a
    late or lost async commit), with that start: committed at the run's end even if nothing new
    arrives, so the group's lag says what is really unloaded (`nova stack down`'s drain trusts it).
    A group that never committed is left alone."""
    try:
        known = consumer.committed([TopicPartition(t, p) for t, p in starts], timeout=5)
    except KafkaException as exc:
        log(f"reading the group's committed offsets failed ({exc}); they catch up at the next load")
        return {}
    behind = {}
    for tp in known:
        start = starts.get((tp.topic, tp.partition), -1)
        if tp.offset >= 0 and start > tp.offset:
            behind[(tp.topic, tp.partition)] = start
    return behind
