"""Hand-over between ingestion runs without a gap in loading, and without two loaders at once.

A run lives `max_run_seconds` (10 minutes by default), so Dagster shows ingestion as runs. Ending
one and launching the next used to stop loading for the next run's start-up (4-6 s of process
start, imports and resources). Now the sensor launches a successor shortly before a run's window
ends; the successor starts up while its predecessor still loads, then asks it to stop
(`nova/successor` on the predecessor). The predecessor's loader stops at its next poll, flushes and
commits, and tags itself `nova/released`; only then does the successor read the committed offsets
and load. Loading pauses for a flush and a commit, not for a process start.

The same turn-taking keeps any two loaders of overlapping partitions apart (an ingestion run and a
replay, whatever their tags): a loader run waits for every earlier in-flight one to release. The
runs' coordination lives in Dagster's run storage (tags), which every run of every launcher sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dagster as dg

SUCCESSOR_OF_TAG = "nova/successor-of"  # on a successor: the run it takes over from
SUCCESSOR_TAG = "nova/successor"  # on a run: its successor is ready, so stop and release
RELEASED_TAG = "nova/released"  # on a run: its loader has stopped and committed
SHARD_TAG = "nova/shard"  # "k/N": the run loads shard k of N (NOVA_INGEST_SHARDS)
ENDS_AT_TAG = "nova/ends-at"  # on a run: when its window ends (epoch seconds)
LOADER_JOBS = ("kafka_ingestion", "kafka_replay")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def overlaps(a: dg.DagsterRun, b: dg.DagsterRun) -> bool:
    """Whether two loader runs may own a common partition (different shard counts always may)."""
    a_shard, _, a_count = a.tags.get(SHARD_TAG, "0/1").partition("/")
    b_shard, _, b_count = b.tags.get(SHARD_TAG, "0/1").partition("/")
    return a_count != b_count or a_shard == b_shard


def earlier_loaders(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterRun]:
    """In-flight loader runs created before `run_id` that overlap it and have not released."""
    mine = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1)
    if not mine:
        return []
    me = mine[0]
    found = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT), limit=100):
        run = record.dagster_run
        if run.run_id == run_id or run.job_name not in LOADER_JOBS or RELEASED_TAG in run.tags:
            continue
        if (record.create_timestamp, record.storage_id) < (me.create_timestamp, me.storage_id) and overlaps(
            run, me.dagster_run
        ):
            found.append(run)
    return found


def await_turn(
    instance: dg.DagsterInstance,
    run_id: str,
    log: Callable[[str], None],
    heartbeat: Callable[[], None] = lambda: None,
    poll_s: float = 0.1,
) -> float:
    """Block until no earlier loader of overlapping partitions is loading; ask the predecessor this
    run succeeds to stop now. `heartbeat` is called every 5 s while waiting (a predecessor that
    died is only failed once its own heartbeat is stale). Returns the seconds waited."""
    run = instance.get_run_by_id(run_id)
    predecessor = run.tags.get(SUCCESSOR_OF_TAG, "") if run is not None else ""
    began = last_beat = time.monotonic()
    asked = False
    announced: set[str] = set()
    while True:
        if time.monotonic() - last_beat >= 5.0:
            heartbeat()
            last_beat = time.monotonic()
        earlier = earlier_loaders(instance, run_id)
        if not earlier:
            break
        for other in earlier:
            if other.run_id == predecessor and not asked:
                instance.add_run_tags(other.run_id, {SUCCESSOR_TAG: run_id})
                log(f"ready: asked run {other.run_id[:8]} to hand over its partitions")
                asked = True
            elif other.run_id not in announced and other.run_id != predecessor:
                log(f"waiting for loader run {other.run_id[:8]} ({other.job_name}, {other.status.value}) to finish")
            announced.add(other.run_id)
        time.sleep(poll_s)
    waited = time.monotonic() - began
    if announced:
        log(f"took over after {waited:.2f} s")
    return waited


class SuccessorWatch:
    """Sets `stop` once a successor asks this run to hand over (polls the run's tags).

    Once a second: the run keeps loading until it notices, so a later notice only makes the
    successor wait longer, never opens a gap in the loading. Reading the run costs ~5 ms of CPU
    (SQLite storage): polled every 0.1 s it was the loader's largest thread (0.047 cores of its
    0.105 at 2,000 events/s).
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        stop: threading.Event,
        log: Callable[[str], None],
        poll_s: float = 1.0,
    ) -> None:
        self.instance, self.run_id, self.stop_loader, self.log, self.poll_s = instance, run_id, stop, log, poll_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="successor-watch", daemon=True)

    def __enter__(self) -> SuccessorWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        # released: the loader has flushed and committed (or failed); the successor may load now
        self.instance.add_run_tags(self.run_id, {RELEASED_TAG: f"{time.time():.3f}"})

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            try:
                run = self.instance.get_run_by_id(self.run_id)
            except Exception:  # a storage hiccup: look again at the next poll
                continue
            successor = run.tags.get(SUCCESSOR_TAG) if run is not None else None
            if successor:
                self.log(f"run {successor[:8]} is ready to take over: stopping after this batch")
                self.stop_loader.set()
                return


def handover_due(run: dg.DagsterRun, ends_at: float, now: float, lead_s: float = 30.0) -> bool:
    """Whether a started run is close enough to its window's end that its successor should launch:
    within `lead_s`, or half the window for short ones, so the successor's start-up fits."""
    ops = run.run_config.get("ops")
    config = ops.get("ingest_kafka", {}).get("config", {}) if isinstance(ops, dict) else {}
    window = float(config.get("max_run_seconds", 600.0))
    return (
        run.status == dg.DagsterRunStatus.STARTED
        and SUCCESSOR_TAG not in run.tags
        and RELEASED_TAG not in run.tags
        and ends_at - now <= min(lead_s, window / 2)
    )
