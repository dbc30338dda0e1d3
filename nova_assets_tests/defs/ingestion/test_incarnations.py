"""When Kafka forgets: a broker restart or a topic re-creation restarts offsets; nothing is skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import TopicPartition

from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.ingestion.offsets import PartitionLag, expired_unloaded
from nova_assets.core.ingestion.stats import IngestStats
from nova_assets.core.process import free_port
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack.services import KafkaService
from nova_assets_tests.defs.ingestion.test_ingestion import FAST, WORKER, _committed, _counts


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaService]:
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    try:
        yield service
    finally:
        service.stop()


def _resource(service: KafkaService) -> KafkaResource:
    return KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})


def _incarnations(ch: ClickHouseResource) -> list[tuple[str, int]]:
    return [
        (str(r[0]), int(r[1]))
        for r in ch.query(
            "SELECT kafka_incarnation, count() FROM events GROUP BY kafka_incarnation ORDER BY min(ingested_at)"
        ).result_rows
    ]


def test_broker_restart_between_loads_loads_every_event_once(
    broker: KafkaService, clickhouse: ClickHouseResource
) -> None:
    kafka = _resource(broker)
    first = produce_events(kafka, rate=0, duration_s=60, total=3000)["valid"]
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert _counts(clickhouse) == (first, first, 0)
    broker.stop()  # the local broker keeps topics in memory: they, and the group's offsets, are gone
    broker.start_and_wait()
    second = produce_events(kafka, rate=0, duration_s=60, total=3000)["valid"]
    warnings: list[str] = []
    stats = Loader(clickhouse, kafka, IngestSettings(**FAST), log_warning=warnings.append).run()
    assert stats.skipped_already_loaded == 0 and stats.rows["nova.events"] == second
    assert _counts(clickhouse) == (first + second, first + second, 0)
    assert len(stats.resets) == 1 and stats.resets[0].startswith("nova.events: ")
    assert stats.metadata()["topic_resets"] == stats.resets[0]
    assert warnings and "new incarnation" in warnings[0]
    assert [n for _, n in _incarnations(clickhouse)] == [first, second]
    # a third run with nothing new changes nothing, and sees no reset
    again = Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert again.resets == [] and _counts(clickhouse) == (first + second, first + second, 0)


def test_topic_recreated_after_a_killed_run_is_exact(kafka: KafkaResource, clickhouse: ClickHouseResource) -> None:
    total = produce_events(kafka, rate=0, duration_s=60, total=40_000)["valid"]
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, clickhouse.url, kafka.bootstrap_servers, clickhouse.database]
    )
    try:
        deadline = time.monotonic() + 60
        while _committed(kafka) <= 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    # an insert the killed process had sent may still complete on the server: wait until it settles
    settled, loaded_before = time.monotonic(), -1
    while time.monotonic() - settled < 1.5:
        current = _counts(clickhouse)[0]
        if current != loaded_before:
            loaded_before, settled = current, time.monotonic()
        time.sleep(0.1)
    loaded_before, unique_before, _ = _counts(clickhouse)
    assert 0 < loaded_before == unique_before < total
    admin = kafka.admin()
    admin.delete_topics(["nova.events"])["nova.events"].result(10)
    time.sleep(0.5)
    fresh = produce_events(kafka, rate=0, duration_s=60, total=5000)["valid"]  # offsets 0.. again
    stats = Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert stats.resets and stats.rows["nova.events"] == fresh
    rows, unique, _ = _counts(clickhouse)
    assert rows == unique == loaded_before + fresh
    assert _incarnations(clickhouse)[-1][1] == fresh


def test_a_hanging_broker_does_not_stop_inserts(broker: KafkaService, clickhouse: ClickHouseResource) -> None:
    """Messages already fetched keep loading while the broker (and so every commit) hangs."""
    kafka = _resource(broker)
    total = produce_events(kafka, rate=0, duration_s=60, total=60_000)["valid"]
    settings = IngestSettings(max_batch_rows=1000, flush_interval_ms=20, idle_exit_seconds=5, max_run_seconds=60)
    loader = Loader(clickhouse, kafka, settings)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (loader.run(), done.set()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while _counts(clickhouse)[0] < 5000 and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        during = _counts(clickhouse)[0]
        time.sleep(3)
        after = _counts(clickhouse)[0]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert after > during  # inserts went on while commits could not be answered
    thread.join(90)
    assert done.is_set() and _counts(clickhouse) == (total, total, 0)


@pytest.mark.parametrize(("first", "second"), [(1000, 3000), (3000, 1000)], ids=["longer-log", "shorter-log"])
def test_without_topic_ids_the_log_tells_a_forgotten_topic(
    broker: KafkaService, clickhouse: ClickHouseResource, first: int, second: int
) -> None:
    """A broker that gives no topic IDs: the checkpoints' fingerprints notice the reset, either by
    another message at the checkpoint's offset (longer-log) or a log ending before it (shorter-log)."""
    kafka = _resource(broker)
    settings = IngestSettings(incarnations="fingerprint", **FAST)
    loaded = produce_events(kafka, rate=0, duration_s=60, total=first)["valid"]
    Loader(clickhouse, kafka, settings).run()
    quiet = Loader(clickhouse, kafka, settings).run()  # the same log: verified, not reset
    assert quiet.resets == [] and _counts(clickhouse) == (loaded, loaded, 0)
    broker.stop()
    broker.start_and_wait()
    fresh = produce_events(kafka, rate=0, duration_s=60, total=second)["valid"]
    warnings: list[str] = []
    stats = Loader(clickhouse, kafka, settings, log_warning=warnings.append).run()
    assert len(stats.resets) == 1 and stats.rows["nova.events"] == fresh and stats.skipped_already_loaded == 0
    assert _counts(clickhouse) == (loaded + fresh, loaded + fresh, 0)
    why = "another message at" if second > first else "the log ends at"
    assert warnings and "new incarnation" in warnings[0] and why in warnings[0]
    incarnations = _incarnations(clickhouse)
    assert [n for _, n in incarnations] == [loaded, fresh] and all(i.startswith("fp-") for i, _ in incarnations)
    again = Loader(clickhouse, kafka, settings).run()
    assert again.resets == [] and again.messages == 0


def test_a_new_topic_id_over_the_same_log_loads_nothing_twice(
    broker: KafkaService, clickhouse: ClickHouseResource
) -> None:
    """A log copied with its offsets (a cluster migration) has a new topic ID but the same messages."""
    kafka = _resource(broker)
    loaded = produce_events(kafka, rate=0, duration_s=60, total=2000)["valid"]
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    # make the rows, the checkpoints and the incarnation history those of an "old cluster" ID
    with clickhouse.session() as client:
        client.command(
            "ALTER TABLE events UPDATE kafka_incarnation = 'old-cluster' WHERE 1 SETTINGS mutations_sync = 2"
        )
        client.command(
            "INSERT INTO kafka_checkpoints (topic, incarnation, partition, offset, fingerprint) "
            "SELECT topic, 'old-cluster', partition, offset, fingerprint FROM kafka_checkpoints"
        )
        client.command("INSERT INTO kafka_incarnations (topic, incarnation) VALUES ('nova.events', 'old-cluster')")
    consumer = kafka.consumer()
    consumer.commit(offsets=[TopicPartition("nova.events", 0, 0)], asynchronous=False)  # read it all again
    consumer.close()
    warnings: list[str] = []
    stats = Loader(clickhouse, kafka, IngestSettings(**FAST), log_warning=warnings.append).run()
    assert stats.resets == [] and stats.skipped_already_loaded == loaded and sum(stats.rows.values()) == 0
    assert warnings and "same messages" in warnings[0]
    more = produce_events(kafka, rate=0, duration_s=60, total=500)["valid"]
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    assert _counts(clickhouse) == (loaded + more, loaded + more, 0)
    assert _incarnations(clickhouse) == [("old-cluster", loaded + more)]


def test_messages_removed_by_retention_before_loading_are_found() -> None:
    """The local broker cannot delete records (Tansu has no DeleteRecords), so this is the rule alone."""
    lags = [
        PartitionLag("nova.events", 0, committed=100, low=1000, high=3000),  # 900 expired unloaded
        PartitionLag("nova.events", 1, committed=-1, low=1000, high=3000),  # never committed: starts at 1000
        PartitionLag("nova.events", 2, committed=1000, low=1000, high=3000),  # exactly at the start
        PartitionLag("nova.public.posts", 0, committed=5, low=40, high=50),  # a reset topic: old offsets
    ]
    assert expired_unloaded(lags, {"nova.public.posts"}) == [lags[0]]
    assert expired_unloaded(lags) == [lags[0], lags[3]]


def test_an_unknown_incarnation_source_names_the_setting() -> None:
    from nova_assets.errors import ConfigError

    with pytest.raises(ConfigError, match=r"incarnations.*topic-ids.*must be one of auto, fingerprint"):
        IngestSettings(incarnations="topic-ids")


def test_the_continuity_check_shows_resets_and_retention_losses(
    broker: KafkaService, clickhouse: ClickHouseResource
) -> None:
    """What the UI shows: a reset is a WARN naming the old and new log; a loss to retention an ERROR."""
    from nova_assets.defs.slo.checks import kafka_continuity_check

    kafka = _resource(broker)
    produce_events(kafka, rate=0, duration_s=60, total=500)
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    clean = kafka_continuity_check(clickhouse=clickhouse, kafka=kafka)
    assert clean.passed and clean.metadata["topic_resets"].value == 0
    broker.stop()
    broker.start_and_wait()
    produce_events(kafka, rate=0, duration_s=60, total=500)
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    reset = kafka_continuity_check(clickhouse=clickhouse, kafka=kafka)
    assert not reset.passed and reset.severity == dg.AssetCheckSeverity.WARN
    assert "1 topic reset(s): nova.events: " in (reset.description or "")
    # a loss to retention, recorded as the loader records it (the local broker cannot delete records)
    loader = Loader(clickhouse, kafka, IngestSettings(**FAST), run_id="r1")
    loader.resume.incarnations["nova.events"] = "x"
    stats = IngestStats()
    loader.resume._record_expired([PartitionLag("nova.events", 0, committed=100, low=1000, high=3000)], stats)
    assert stats.expired == {"nova.events:0": 900}
    lost = kafka_continuity_check(clickhouse=clickhouse, kafka=kafka)
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.ERROR
    assert lost.metadata["lost_to_retention"].value == 900
    assert (lost.description or "").startswith("900 message(s) lost to retention (nova.events:0)")
    payload = clickhouse.query("SELECT payload FROM dead_letters WHERE error_kind = 'expired'").result_rows
    assert payload == [('{"first":100,"last":999,"count":900}',)]
