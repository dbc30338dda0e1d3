"""The deployed shape, live: dagster-daemon runs the project's sensor, which launches ingestion
runs; a run's process is killed with SIGKILL mid-run, and the next run still loads every event
exactly once.

Everything is real: Tansu, chDB, the daemon with the project's dagster.yaml and workspace, runs
launched by Dagster's default launcher. Only the sensor interval and heartbeat staleness are
shortened (through their NOVA_* settings) to keep the test near a minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from nova_assets.defs.ingestion.jobs import HEARTBEAT_TAG
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack import Stack

ROOT = Path(__file__).resolve().parents[3]


def _ingestion_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name="kafka_ingestion")))


def _wait(what: str, check, timeout_s: float, daemon: subprocess.Popen, log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if daemon.poll() is not None:
            pytest.fail(
                f"dagster-daemon exited ({daemon.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}\n{log.read_text()[-3000:]}")


def _run_pids(instance: dg.DagsterInstance, run_id: str) -> set[int]:
    """The run worker, which executes the step in its own process (in-process executor), as the
    run's own events record it (not the daemon or code server, which log the enqueue and launch
    events of the same run); empty until the step has started."""
    events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]
    started = {e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START and e.pid}
    steps = {e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START and e.pid}
    return started | steps if steps else set()


@dataclass
class _Live:
    instance: dg.DagsterInstance
    daemon: subprocess.Popen[bytes]
    log: Path
    producer: threading.Thread
    produced: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def _live_daemon(
    tmp_path: Path,
    stack: Stack,
    kafka: KafkaResource,
    clickhouse: ClickHouseResource,
    extra_env: dict[str, str],
    partitions: int,
) -> Iterator[_Live]:
    """dagster-daemon with the project's dagster.yaml and workspace, pointed at this test's
    ClickHouse database and broker, while a steady stream of events is produced (until `stop`)."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **stack.env(),  # Redis and Postgres of the session stack
        "DAGSTER_HOME": str(home),
        "NOVA_CLICKHOUSE_URL": clickhouse.url,
        "NOVA_CLICKHOUSE_DATABASE": clickhouse.database,
        "NOVA_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "NOVA_INGEST_SENSOR_INTERVAL": "2",
        # a run beats every 5 s; 12 s leaves room for a busy 2-core machine (three runs at once)
        "NOVA_INGEST_HEARTBEAT_STALE": "12",
        **extra_env,
    }
    # the instance's storage is created here, before the daemon and its code server open it
    # concurrently (two first openers of a fresh SQLite storage race on its migrations)
    instance = dg.DagsterInstance.from_config(str(home))
    produced: list[int] = []
    stop = threading.Event()

    def produce() -> None:
        # a steady stream, until shortly after the kill, keeps the runs loading when one dies
        while not stop.is_set():
            produced.append(produce_events(kafka, rate=2_000, duration_s=1, partitions=partitions)["valid"])

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield _Live(instance, daemon, log, producer, produced, stop)
    finally:
        stop.set()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        instance.dispose()


def _kill_then_expect_every_event_once(
    live: _Live, run_id: str, clickhouse: ClickHouseResource, timeout_s: float
) -> None:
    """SIGKILL the run's processes, stop producing shortly after, and wait until every produced
    event is in ClickHouse exactly once."""
    pids = _wait("the run's processes", lambda: _run_pids(live.instance, run_id), 30, live.daemon, live.log)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(3)
    live.stop.set()
    live.producer.join(60)
    expected = sum(live.produced)
    _wait(
        "every produced event in ClickHouse",
        lambda: clickhouse.query("SELECT count() FROM events").result_rows[0][0] >= expected,
        timeout_s, live.daemon, live.log,
    )  # fmt: skip
    total, unique = clickhouse.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    assert (total, unique) == (expected, expected)


def test_daemon_sensor_runs_survive_kill_9_exactly_once(
    tmp_path: Path, stack: Stack, kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    with _live_daemon(tmp_path, stack, kafka, clickhouse, {}, partitions=1) as live:
        instance, daemon, log = live.instance, live.daemon, live.log
        first = _wait(
            "a sensor-launched ingestion run loading rows",
            lambda: next(
                (
                    r
                    for r in _ingestion_runs(instance)
                    if r.status == dg.DagsterRunStatus.STARTED and HEARTBEAT_TAG in r.tags
                    and clickhouse.query("SELECT count() FROM events").result_rows[0][0] > 0
                ),
                None,
            ),
            120, daemon, log,
        )  # fmt: skip
        # the machine dies under the run: its worker goes at once (SIGKILL)
        _kill_then_expect_every_event_once(live, first.run_id, clickhouse, 150)
        runs = {r.run_id: r for r in _ingestion_runs(instance)}
        assert runs[first.run_id].status == dg.DagsterRunStatus.FAILURE  # marked by the sensor: stale heartbeat
        assert len(runs) >= 2  # the next run finished the job


def test_three_shards_load_in_parallel_and_one_killed_shard_loses_nothing(
    tmp_path: Path, stack: Stack, kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    """NOVA_INGEST_SHARDS=3 on a 6-partition topic: three runs side by side (dagster.yaml's per-value
    limit), one SIGKILLed mid-load; every event exactly once and the other shards' runs unharmed."""
    extra = {"NOVA_INGEST_SHARDS": "3", "NOVA_INGEST_IDLE_EXIT_SECONDS": "20"}
    with _live_daemon(tmp_path, stack, kafka, clickhouse, extra, partitions=6) as live:
        instance, daemon, log = live.instance, live.daemon, live.log

        def loading_shards() -> dict[str, dg.DagsterRun] | None:
            started = {
                r.tags.get("nova/shard", ""): r
                for r in _ingestion_runs(instance)
                if r.status == dg.DagsterRunStatus.STARTED and HEARTBEAT_TAG in r.tags
            }
            return started if set(started) == {"0/3", "1/3", "2/3"} else None

        shards = _wait("three shard runs loading at once", loading_shards, 180, daemon, log)
        assert {r.tags["nova/kafka-loader"] for r in shards.values()} == {f"kafka-shard-{k}" for k in range(3)}
        victim = shards["1/3"]
        _kill_then_expect_every_event_once(live, victim.run_id, clickhouse, 180)
        per_partition = dict(clickhouse.query("SELECT kafka_partition, count() FROM events GROUP BY 1").result_rows)
        assert set(per_partition) == set(range(6))
        runs = {r.run_id: r for r in _ingestion_runs(instance)}
        assert runs[victim.run_id].status == dg.DagsterRunStatus.FAILURE  # stale heartbeat
        for other in (shards["0/3"], shards["2/3"]):
            why = [e.message for e in instance.all_logs(other.run_id) if e.dagster_event is not None
                   and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE]  # fmt: skip
            assert runs[other.run_id].status != dg.DagsterRunStatus.FAILURE, why  # untouched by the kill
        # the killed shard's partitions (1 and 4) were finished by a later run of the same shard
        later = [r for r in runs.values() if r.tags.get("nova/shard") == "1/3" and r.run_id != victim.run_id]
        assert later
