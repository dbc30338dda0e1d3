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

import pytest

from nova_assets.defs.ingestion.loader import IngestSettings, Loader
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack.manager import KafkaService
from nova_assets.stack.process import free_port
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
