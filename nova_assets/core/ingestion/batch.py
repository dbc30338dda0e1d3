"""A micro-batch being cut, and the one writer thread that flushes batches in order."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nova_assets.core.ingestion.messages import EVENTS_TOPIC, EventBatch

TP = tuple[str, int]
DEAD_LETTER_COLUMNS = ["topic", "partition", "offset", "incarnation", "key", "payload", "error", "error_kind", "run_id"]


@dataclass
class Batch:
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


class Lanes:
    """The batches being cut, one per lane: events, and CDC changes, each flushed on its own clock.

    An insert costs the ClickHouse server about the same for 4 rows as for 4,000 (a new part per
    table, and the materialized views' parts: 10 to 25 ms of CPU), so what a quiet stream costs is
    its flushes per second times its tables. Events flush every `flush_interval_ms` (event-to-visible
    goal 1 s); a CDC batch touches up to five mirror tables and its goal is 2 s, so it flushes
    every `cdc_flush_interval_ms`. The lanes hold disjoint topics: each batch commits only its own
    partitions, so a lane's rows never wait on, nor are committed by, the other's.
    """

    def __init__(self, events_every_s: float, changes_every_s: float) -> None:
        self.every = {"events": events_every_s, "changes": changes_every_s}
        self.open = {lane: Batch() for lane in self.every}

    def __len__(self) -> int:
        return sum(len(b) for b in self.open.values())

    def split(self, messages: list[Any], now: float) -> list[tuple[Batch, list[Any]]]:
        """The messages of one consume() by lane, each with the batch it goes into (opened now if empty)."""
        events = [m for m in messages if m.topic() == EVENTS_TOPIC]
        changes = [m for m in messages if m.topic() != EVENTS_TOPIC] if len(events) < len(messages) else []
        out = []
        for lane, part in (("events", events), ("changes", changes)):
            if part:
                batch = self.open[lane]
                if not len(batch):
                    batch.opened = now
                out.append((batch, part))
        return out

    def wait(self, now: float, longest: float) -> float:
        """How long the next consume() may wait: until the earliest open batch is due, at most `longest`."""
        due = [b.opened + self.every[lane] - now for lane, b in self.open.items() if len(b)]
        return max(0.0, min([longest, *due]))

    def events_due_in(self, now: float) -> float | None:
        """Seconds until the open events batch is due (None: none open): how long a paced loader
        leaves what arrives meanwhile with the consumer, whose fetches then back off (`config.paced_fetch`)."""
        batch = self.open["events"]
        return max(0.0, batch.opened + self.every["events"] - now) if len(batch) else None

    def take_due(self, now: float, max_rows: int) -> list[Batch]:
        """The batches old or large enough to flush, each replaced by an empty one."""
        out = []
        for lane, batch in self.open.items():
            if len(batch) and (now - batch.opened >= self.every[lane] or len(batch) >= max_rows):
                out.append(batch)
                self.open[lane] = Batch()
        return out

    def take_all(self) -> list[Batch]:
        """Every batch that holds something (the run's end)."""
        out = [b for b in self.open.values() if len(b)]
        self.open = {lane: Batch() for lane in self.every}
        return out


class Writer:
    """One background thread that flushes batches in submission order; the first error stops it."""

    def __init__(self, flush: Callable[[Batch], None]) -> None:
        self.flush = flush
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
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

    def submit(self, batch: Batch) -> None:
        """Queue a batch; blocks while one is being written and another is waiting (back-pressure)."""
        self.raise_if_failed()
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for queued batches, then re-raise the writer's error, if any."""
        self.queue.put(None)
        self.thread.join()
        self.raise_if_failed()
