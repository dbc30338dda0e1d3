"""End-to-end ingestion against a real Tansu broker, chDB and a Dagster instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import orjson
import pytest
from confluent_kafka import TopicPartition

from nova_assets.core.ingestion.loader import IngestionFailed, IngestSettings, Loader
from nova_assets.core.process import free_port
from nova_assets.defs.ingestion.jobs import HEARTBEAT_TAG, kafka_ingestion_job, kafka_replay_job
from nova_assets.defs.ingestion.sensors import kafka_ingestion_sensor
from nova_assets.generate.events import MALFORMED_KINDS, produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource, RedisResource

FAST = {"idle_exit_seconds": 1.0, "max_run_seconds": 120.0}


def _counts(ch: ClickHouseResource) -> tuple[int, int, int]:
    events = ch.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    dead = ch.query("SELECT count() FROM dead_letters").result_rows[0][0]
    return int(events[0]), int(events[1]), int(dead)


def _committed(kafka: KafkaResource) -> int:
    consumer = kafka.consumer()
    try:
        return consumer.committed([TopicPartition("nova.events", 0)], timeout=5)[0].offset
    finally:
        consumer.close()


def _tick(instance: dg.DagsterInstance, kafka: KafkaResource, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources={"kafka": kafka}, cursor=cursor)
    return kafka_ingestion_sensor(context)


def test_sensor_run_loads_exactly_once_with_dead_letters(
    kafka: KafkaResource, clickhouse: ClickHouseResource, instance: dg.DagsterInstance, redis_resource: RedisResource
) -> None:
    skipped = _tick(instance, kafka)
    assert not skipped.run_requests and "no nova.events" in str(skipped.skip_reason)

    counts = produce_events(kafka, rate=0, duration_s=60, total=5000, malformed_share=0.05)
    valid, bad = counts["valid"], counts["malformed"]
    assert bad >= len(MALFORMED_KINDS)

    result = _tick(instance, kafka)
    assert len(result.run_requests) == 1
    # the topic's source asset gets its lag as an observation (at most once a minute)
    [observed] = [e for e in result.asset_events if e.asset_key == dg.AssetKey(["kafka", "nova.events"])]
    assert isinstance(observed, dg.AssetObservation)
    lag = observed.metadata["consumer_lag"].value
    # Tansu's ListOffsets reports the last batch's start + 1, so the end can be a little short
    assert 0 < lag <= valid + bad and lag == observed.metadata["end_offset"].value
    assert observed.metadata["committed_offset"].value == 0
    request = result.run_requests[0]
    assert request.tags["nova/pipeline"] == "ingestion" and "nova.events:0:0-" in request.tags["nova/offsets"]

    run = kafka_ingestion_job.execute_in_process(
        instance=instance,
        resources={"clickhouse": clickhouse, "kafka": kafka, "redis": redis_resource},
        run_config={"ops": {"ingest_kafka": {"config": FAST}}},
        tags=request.tags,
    )
    assert run.success
    assert _counts(clickhouse) == (valid, valid, bad)
    assert _committed(kafka) == valid + bad
    kinds = dict(clickhouse.query("SELECT error_kind, count() FROM dead_letters GROUP BY error_kind").result_rows)
    assert set(kinds) >= {"invalid_json", "not_utf8", "not_object", "missing_field", "invalid_field", "oversized"}
    raw = clickhouse.query("SELECT payload FROM dead_letters WHERE error_kind = 'not_utf8' LIMIT 1").result_rows[0][0]
    assert isinstance(raw, bytes | str)

    materialized = {ev.asset_key.path[-1]: ev for ev in run.get_asset_materialization_events()}
    meta = materialized["events"].step_materialization_data.materialization.metadata
    assert meta["rows"].value == valid
    assert meta["dead_letters"].value == bad
    assert meta["event_to_visible_p95_s"].value > 0
    per_topic = meta["per_topic"].value
    assert [c.name for c in per_topic.schema.columns] == [
        "topic", "rows", "dead_letters", "batches", "lag", "p50_s", "p95_s", "p99_s"
    ]  # fmt: skip
    assert [(r.data["topic"], r.data["rows"], r.data["dead_letters"]) for r in per_topic.records] == [
        ("nova.events", valid, bad)
    ]
    assert per_topic.records[0].data["p95_s"] > 0 and per_topic.records[0].data["batches"] >= 1

    # the dead letters' page: a sample per kind, with counts, and every byte escaped
    dead_meta = materialized["dead_letters"].step_materialization_data.materialization.metadata
    samples = dead_meta["samples"].value
    assert [c.name for c in samples.schema.columns] == [
        "kind", "count", "topic", "partition", "offset", "reason", "first_200_bytes"
    ]  # fmt: skip
    sampled = [r.data for r in samples.records]
    assert {r["kind"] for r in sampled} == set(kinds)
    assert all(1 <= sum(1 for r in sampled if r["kind"] == k) <= 3 for k in kinds)
    assert {r["kind"]: r["count"] for r in sampled} == kinds
    for row in sampled:
        text = row["first_200_bytes"] + row["reason"]
        assert text.isascii() and text.isprintable(), text
        assert len(row["first_200_bytes"]) <= 4 * 200

    # caught up: the next tick skips and states the lag
    after = _tick(instance, kafka, result.cursor)
    assert not after.run_requests and "no lag" in str(after.skip_reason)


def test_no_second_run_while_one_is_in_flight_and_stale_runs_fail(
    kafka: KafkaResource, clickhouse: ClickHouseResource, instance: dg.DagsterInstance
) -> None:
    produce_events(kafka, rate=0, duration_s=60, total=100)
    first = _tick(instance, kafka)
    assert len(first.run_requests) == 1
    run = instance.create_run_for_job(kafka_ingestion_job, tags=first.run_requests[0].tags)
    for _ in range(2):
        again = _tick(instance, kafka, first.cursor)
        assert not again.run_requests and f"run {run.run_id[:8]}" in str(again.skip_reason)

    # the run "started" and then its process died: the heartbeat stops
    instance.report_run_failed  # noqa: B018 - exists on every instance
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(event_type_value="PIPELINE_START", job_name=run.job_name, message="started"),
    )
    instance.add_run_tags(run.run_id, {HEARTBEAT_TAG: f"{time.time() - 600:.0f}@host"})
    revived = _tick(instance, kafka, first.cursor)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert len(revived.run_requests) == 1
    assert revived.run_requests[0].run_key != first.run_requests[0].run_key


class _CrashAfterInsert(Loader):
    """Dies between the ClickHouse insert and the offset commit, like a kill -9 at the worst moment."""

    def _flush(self, consumer, batch, stats):  # type: ignore[no-untyped-def]
        self._insert(batch)
        raise SystemExit("simulated crash before commit")


def test_crash_between_insert_and_commit_loads_nothing_twice(
    kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    counts = produce_events(kafka, rate=0, duration_s=60, total=3000, malformed_share=0.02)
    with pytest.raises(SystemExit):
        _CrashAfterInsert(clickhouse, kafka, IngestSettings(max_batch_rows=1000, **FAST)).run()
    assert _committed(kafka) < 0  # nothing committed
    loaded, _, _ = _counts(clickhouse)
    assert loaded > 0
    stats = Loader(clickhouse, kafka, IngestSettings(max_batch_rows=700, **FAST)).run()
    assert stats.skipped_already_loaded > 0
    assert _counts(clickhouse) == (counts["valid"], counts["valid"], counts["malformed"])
    mv = clickhouse.query("SELECT sum(views + clicks + likes + comments + shares) FROM post_metrics_1h").result_rows
    assert mv == [(counts["valid"],)]


WORKER = """
import os, sys
from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.resources import ClickHouseResource, KafkaResource, RedisResource
ch = ClickHouseResource(url=sys.argv[1], database=sys.argv[3])
kafka = KafkaResource(bootstrap_servers=sys.argv[2])
Loader(ch, kafka, IngestSettings(max_batch_rows=2000, flush_interval_ms=50, idle_exit_seconds=30)).run()
"""


def test_kill_9_mid_run_then_rerun_is_exact(kafka: KafkaResource, clickhouse: ClickHouseResource) -> None:
    counts = produce_events(kafka, rate=0, duration_s=60, total=60_000)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, clickhouse.url, kafka.bootstrap_servers, clickhouse.database]
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            committed = _committed(kafka)
            if committed > 0:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < _committed(kafka) < counts["valid"]
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert _counts(clickhouse) == (counts["valid"], counts["valid"], 0)
    assert _committed(kafka) == counts["valid"]


def test_clickhouse_failure_commits_nothing_then_rerun_completes(
    kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    counts = produce_events(kafka, rate=0, duration_s=60, total=2000)
    # a ClickHouse that does not answer: nothing listens on the port
    down = ClickHouseResource(url=f"http://default:x@127.0.0.1:{free_port()}", connect_timeout_s=0.2)
    loader = Loader(down, kafka, IngestSettings(insert_attempts=3, retry_max_wait_s=0.2, **FAST))
    loader._mirror_shapes = lambda: {}  # type: ignore[method-assign]  # set-up reads would fail first
    loader.resume._already_loaded = lambda starts, ends: {}  # type: ignore[method-assign]
    loader.resume._check_incarnations = lambda topics, stats: set()  # type: ignore[method-assign]
    with pytest.raises(IngestionFailed, match="offsets not committed"):
        loader.run()
    assert _committed(kafka) < 0
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert _counts(clickhouse) == (counts["valid"], counts["valid"], 0)


def test_replay_restores_deleted_rows_without_duplicates(
    kafka: KafkaResource, clickhouse: ClickHouseResource, instance: dg.DagsterInstance, redis_resource: RedisResource
) -> None:
    counts = produce_events(kafka, rate=0, duration_s=60, total=1000)
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    clickhouse.command("DELETE FROM events WHERE kafka_offset >= 200 AND kafka_offset < 300")
    assert _counts(clickhouse)[0] == counts["valid"] - 100
    result = kafka_replay_job.execute_in_process(
        instance=instance,
        resources={"clickhouse": clickhouse, "kafka": kafka, "redis": redis_resource},
        run_config={"ops": {"replay_kafka": {"config": {"start_offset": 0, "end_offset": 1000}}}},
    )
    assert result.success
    assert _counts(clickhouse) == (counts["valid"], counts["valid"], 0)
    # by timestamp: everything is already there, nothing is added
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600))
    again = kafka_replay_job.execute_in_process(
        instance=instance,
        resources={"clickhouse": clickhouse, "kafka": kafka, "redis": redis_resource},
        run_config={"ops": {"replay_kafka": {"config": {"start_time": start}}}},
    )
    assert again.success
    assert _counts(clickhouse) == (counts["valid"], counts["valid"], 0)


def test_replay_loads_exactly_its_range_however_much_follows(
    kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    counts = produce_events(kafka, rate=0, duration_s=60, total=3000)
    assert counts["valid"] == 3000
    settings = IngestSettings(commit=False, idle_exit_seconds=1.0, max_run_seconds=60)
    Loader(clickhouse, kafka, settings).run({("nova.events", 0): (100, 300)})
    rows = clickhouse.query("SELECT min(kafka_offset), max(kafka_offset), count() FROM events").result_rows[0]
    assert tuple(rows) == (100, 299, 200)
    assert _committed(kafka) < 0  # a replay never moves the group's offsets


def test_a_tick_while_a_run_loads_asks_the_broker_nothing(
    kafka: KafkaResource, clickhouse: ClickHouseResource, instance: dg.DagsterInstance
) -> None:
    """A loading run makes the lag moot: the tick answers from Dagster's storage, even with no broker
    at all, until the once-a-minute observation or the run's hand-over needs the broker again."""
    produce_events(kafka, rate=0, duration_s=60, total=100)
    first = _tick(instance, kafka)
    assert len(first.run_requests) == 1
    run = instance.create_run_for_job(kafka_ingestion_job, tags=first.run_requests[0].tags)
    nowhere = KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    began = time.monotonic()
    quiet = _tick(instance, nowhere, first.cursor)
    assert time.monotonic() - began < 1.0
    assert not quiet.run_requests and f"run {run.run_id[:8]}" in str(quiet.skip_reason)
    assert quiet.cursor == first.cursor

    # the minute's observation is due: the broker is asked again (and here, it is not there)
    stale = orjson.loads(first.cursor or "{}")
    stale["observed"] = time.time() - 120
    with pytest.raises(Exception):  # noqa: B017 - whichever error the unreachable broker gives
        _tick(instance, nowhere, orjson.dumps(stale).decode())
    observed = _tick(instance, kafka, orjson.dumps(stale).decode())
    assert not observed.run_requests and observed.asset_events


def test_the_sensors_runs_are_paced_unless_nova_ingest_paced_says_no(monkeypatch: pytest.MonkeyPatch) -> None:
    from nova_assets.defs.ingestion.sensors import run_config
    from nova_assets.errors import ConfigError

    assert run_config()["ops"]["ingest_kafka"]["config"]["paced"] is True
    monkeypatch.setenv("NOVA_INGEST_PACED", "0")
    assert run_config()["ops"]["ingest_kafka"]["config"]["paced"] is False
    monkeypatch.setenv("NOVA_INGEST_PACED", "sometimes")
    with pytest.raises(ConfigError, match="NOVA_INGEST_PACED"):
        run_config()
