"""A micro-batch being cut, and the one writer thread that flushes batches in order."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nova_assets.core.ingestion.messages import EventBatch

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
