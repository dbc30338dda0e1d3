"""What a broker that forgot its topics looks like to the lag and the incarnation checks.

A run assigns the partitions it saw when it started. When its topic comes back with more of
them (a memory broker restarted and the topic created again larger), the run ends within seconds
so the next one takes every partition: nothing waits for the run's window to end. A log that comes
back shorter than the committed offset is all lag (the sensor launches a run, `nova stack down`
drains it), and its checkpoints are found gone at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.ingestion.offsets import fingerprint, partition_lags, verify_checkpoints
from nova_assets.core.process import free_port
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack.services import KafkaService

pytestmark = pytest.mark.integration


def _loaded(ch: ClickHouseResource) -> int:
    return int(ch.query("SELECT count() FROM events").result_rows[0][0])


def test_a_run_ends_when_its_topic_comes_back_larger(tmp_path: Path, clickhouse: ClickHouseResource) -> None:
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    kafka = KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
    try:
        first = produce_events(kafka, rate=10_000, duration_s=1, total=200, partitions=1)["valid"]
        done: list[float] = []

        def run() -> None:  # a run that would otherwise idle for a minute
            Loader(clickhouse, kafka, IngestSettings(idle_exit_seconds=60.0, max_run_seconds=120.0)).run()
            done.append(time.monotonic())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while _loaded(clickhouse) < first:
            assert time.monotonic() < deadline, "the run did not load partition 0"
            time.sleep(0.1)
        service.stop()  # the memory broker forgets the topic ...
        service.start_and_wait()
        more = produce_events(kafka, rate=10_000, duration_s=1, total=300, partitions=3)["valid"]  # ... back with 3
        back = time.monotonic()
        thread.join(timeout=40)
        assert done and done[0] - back < 20, "the run kept its old assignment"
        # the next runs, as the sensor launches them (Tansu may add a partition when a producer first
        # writes to it: a run that saw fewer ends again, and the one after takes them all)
        for _ in range(5):
            Loader(clickhouse, kafka, IngestSettings(idle_exit_seconds=2.0, max_run_seconds=60.0)).run()
            by_partition = dict(
                clickhouse.query(
                    "SELECT kafka_partition, count() FROM events WHERE kafka_incarnation = "
                    "(SELECT argMax(incarnation, seen_at) FROM kafka_incarnations WHERE topic = 'nova.events') "
                    "GROUP BY kafka_partition"
                ).result_rows
            )
            if sum(by_partition.values()) == more:
                break
        # the new log, once (the producer's partitioner may leave a new partition empty)
        consumer = kafka.consumer()
        try:
            partitions = set(consumer.list_topics("nova.events", timeout=5).topics["nova.events"].partitions)
        finally:
            consumer.close()
        assert len(partitions) > 1 and set(by_partition) <= partitions and sum(by_partition.values()) == more
    finally:
        service.stop()


def test_a_log_shorter_than_the_committed_offset_is_all_lag(tmp_path: Path) -> None:
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    kafka = KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
    consumer = kafka.consumer()
    try:
        first = produce_events(kafka, rate=0, duration_s=60, total=500, partitions=1)["valid"]
        consumer.commit(offsets=[TopicPartition("nova.events", 0, first)], asynchronous=False)
        listed = partition_lags(consumer, ("nova.events",), timeout_s=5)[0]
        caught_up = partition_lags(consumer, ("nova.events",), timeout_s=5, verify_s=2.0)[0]
        assert listed.high < first  # this broker lists the newest batch's start + 1 ...
        assert (caught_up.high, caught_up.lag, caught_up.reset) == (first, 0, False)  # ... a fetch tells the end
        consumer.close()

        service.stop()  # the memory broker forgets the log; a run still going commits its old offset to the new one
        service.start_and_wait()
        second = produce_events(kafka, rate=0, duration_s=60, total=40, partitions=1)["valid"]
        consumer = kafka.consumer()
        consumer.commit(offsets=[TopicPartition("nova.events", 0, first)], asynchronous=False)
        assert partition_lags(consumer, ("nova.events",), timeout_s=5)[0].lag == 0  # what hid it from the sensor
        reset = partition_lags(consumer, ("nova.events",), timeout_s=5, verify_s=2.0)[0]
        assert (reset.reset, reset.start, reset.high, reset.lag) == (True, 0, second, second)
        assert partition_lags(consumer, ("nova.events",), timeout_s=5, verify_s=2.0, verify_all=True)[0].lag == second
        consumer.close()

        # the loader's incarnation check: the checkpoint lies past the new log's end, found without a wait
        consumer = kafka.consumer(**{"auto.offset.reset": "error", "enable.partition.eof": False})
        began = time.monotonic()
        verdict, reasons = verify_checkpoints(consumer, "nova.events", {0: (first - 1, "x")}, timeout_s=30.0)
        assert (verdict, reasons) == (
            "reset",
            [f"nova.events:0: the log ends at {second}, before the loaded offset {first - 1}"],
        )
        assert time.monotonic() - began < 15.0, "it waited out the timeout instead of asking where the log ends"
        # a checkpoint inside the listed end (the newest batch's start) or past it, in the same log: the same
        reader, msgs = kafka.consumer(), []
        reader.assign([TopicPartition("nova.events", 0, 0)])
        while len(msgs) < second:
            msgs += [m for m in reader.consume(100, 1.0) if m.error() is None]
        reader.close()

        for at in (0, second - 1):
            assert verify_checkpoints(consumer, "nova.events", {0: (at, fingerprint(msgs[at]))}, timeout_s=30.0) == (
                "same",
                [],
            )
    finally:
        consumer.close()
        service.stop()
