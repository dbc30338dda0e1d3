"""Run hand-over: the next ingestion run takes over from the current one without a gap in loading,
and two loaders never load at once (real Tansu, ClickHouse server and a Dagster instance on disk;
each run in a process of its own, as the run launcher starts them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import orjson
import pytest

from nova_assets.defs.ingestion.handover import ENDS_AT_TAG, RELEASED_TAG, SUCCESSOR_OF_TAG, SUCCESSOR_TAG
from nova_assets.defs.ingestion.jobs import LOADER_TAG
from nova_assets.defs.ingestion.sensors import kafka_ingestion_sensor
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource

pytestmark = pytest.mark.integration

WORKER = """
import sys, orjson
import dagster as dg
from nova_assets.defs.ingestion.jobs import kafka_ingestion_job, kafka_replay_job
from nova_assets.resources import ClickHouseResource, KafkaResource, RedisResource
home, job, ch_url, db, bootstrap, config, tags = sys.argv[1:8]
resources = {"clickhouse": ClickHouseResource(url=ch_url, database=db)}
resources["kafka"] = KafkaResource(bootstrap_servers=bootstrap)
if job == "kafka_ingestion":
    resources["redis"] = RedisResource(url="redis://127.0.0.1:1/0")  # no post deletions here: never used
with dg.DagsterInstance.from_config(home) as instance:
    target = kafka_ingestion_job if job == "kafka_ingestion" else kafka_replay_job
    result = target.execute_in_process(
        instance=instance, resources=resources, run_config=orjson.loads(config), tags=orjson.loads(tags)
    )
sys.exit(0 if result.success else 1)
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copy(Path(__file__).resolve().parents[3] / "dagster.yaml", tmp_path / "dagster.yaml")
    return tmp_path


def _run(
    home: Path, job: str, ch: ClickHouseResource, kafka: KafkaResource, config: dict, tags: dict
) -> subprocess.Popen[bytes]:
    return subprocess.Popen([
        sys.executable, "-c", WORKER, str(home), job, ch.url, ch.database, kafka.bootstrap_servers,
        orjson.dumps(config).decode(), orjson.dumps(tags).decode(),
    ])  # fmt: skip


def _tick(instance: dg.DagsterInstance, kafka: KafkaResource) -> dg.SensorResult:
    return kafka_ingestion_sensor(dg.build_sensor_context(instance=instance, resources={"kafka": kafka}))


def _until(what: str, check: Callable[[], object], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _runs(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    return list(reversed(instance.get_runs(dg.RunsFilter(job_name=job))))  # oldest first


def _logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.message]


INGEST = {"ops": {"ingest_kafka": {"config": {"max_run_seconds": 120.0, "idle_exit_seconds": 2.0}}}}
# a loader that outlives the replay's start-up (process, imports, job): with a 2 s idle exit it
# had loaded 20k events and ended before the replay looked, once in four CI runs
INGEST_LINGERING = {"ops": {"ingest_kafka": {"config": {"max_run_seconds": 120.0, "idle_exit_seconds": 20.0}}}}


def test_successor_takes_over_without_a_gap_and_loads_exactly_once(
    kafka: KafkaResource, clickhouse: ClickHouseResource, home: Path
) -> None:
    produced: dict[str, int] = {}
    producer = threading.Thread(
        target=lambda: produced.update(produce_events(kafka, rate=2000, duration_s=20)), daemon=True
    )
    producer.start()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _until("lag on the topic", lambda: bool(_tick(instance, kafka).run_requests))
        first = _tick(instance, kafka).run_requests[0]
        a = _run(home, "kafka_ingestion", clickhouse, kafka, INGEST, first.tags)
        _until("run A loading", lambda: (runs := _runs(instance, "kafka_ingestion")) and ENDS_AT_TAG in runs[0].tags
               and clickhouse.query("SELECT count() FROM events").result_rows[0][0] > 0)  # fmt: skip
        pred = _runs(instance, "kafka_ingestion")[0]
        # not due yet: its window (120 s) ends after the lead (30 s)
        assert not _tick(instance, kafka).run_requests
        # as if its window ended in 10 s (the loader's own deadline stays 120 s): due a successor
        instance.add_run_tags(pred.run_id, {ENDS_AT_TAG: f"{time.time() + 10:.0f}"})
        [successor] = _tick(instance, kafka).run_requests
        assert successor.tags[SUCCESSOR_OF_TAG] == pred.run_id
        assert successor.tags[LOADER_TAG] == "kafka-handover"  # the other value: dagster.yaml lets it start
        b = _run(home, "kafka_ingestion", clickhouse, kafka, INGEST, successor.tags)
        _until("A released", lambda: RELEASED_TAG in instance.get_run_by_id(pred.run_id).tags)
        assert not _tick(instance, kafka).run_requests  # B is on it; no third run
        producer.join(60)
        assert a.wait(60) == 0 and b.wait(90) == 0
        a_run, b_run = _runs(instance, "kafka_ingestion")
        assert a_run.tags[SUCCESSOR_TAG] == b_run.run_id
        b_logs = _logs(instance, b_run.run_id)
    loaded = clickhouse.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    assert loaded == (produced["valid"], produced["valid"])
    assert any(m.startswith("took over after") for m in b_logs), b_logs
    # no pause at the hand-over: from A's last load before it released to B's first load after
    # (other pauses, such as a broker that holds a commit for seconds under a loaded machine, are
    # not the hand-over's)
    released_ms = float(a_run.tags[RELEASED_TAG]) * 1000
    before, after = clickhouse.query(
        "SELECT maxIf(t, t <= {r:Float64}), minIf(t, t > {r:Float64}) FROM "
        "(SELECT DISTINCT toFloat64(toUnixTimestamp64Milli(ingested_at)) AS t FROM events)",
        parameters={"r": released_ms},
    ).result_rows[0]
    gap = after - before
    assert 0 < gap < 1500, f"loading paused {gap:.0f} ms at the hand-over; {b_logs}"


def test_a_replay_waits_for_the_loading_run(kafka: KafkaResource, clickhouse: ClickHouseResource, home: Path) -> None:
    """Whatever their tags, two loaders of the same partitions take turns: the later one waits."""
    counts = produce_events(kafka, rate=0, duration_s=60, total=20_000)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ingest = _run(home, "kafka_ingestion", clickhouse, kafka, INGEST_LINGERING, {LOADER_TAG: "kafka-handover"})
        _until("the ingestion run", lambda: _runs(instance, "kafka_ingestion"))
        replay = _run(home, "kafka_replay", clickhouse, kafka,
                      {"ops": {"replay_kafka": {"config": {"topic": "nova.events"}}}}, {})  # fmt: skip
        assert ingest.wait(120) == 0 and replay.wait(120) == 0
        [ingest_run] = _runs(instance, "kafka_ingestion")
        [replay_run] = _runs(instance, "kafka_replay")
        logs = _logs(instance, replay_run.run_id)
    assert any("waiting for loader run" in m for m in logs), logs
    assert float(replay_run.tags[RELEASED_TAG]) > float(ingest_run.tags[RELEASED_TAG])
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0] == (
        counts["valid"], counts["valid"],
    )  # fmt: skip
