"""CDC end to end: embedded Postgres → Debezium (`nova cdc`, real JVM) → Tansu → loader → chDB mirrors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from nova_assets.core.cdc.verify import MIRROR_COLUMNS, mirror_state, source_state
from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.kafka_admin import ensure_topic
from nova_assets.generate.app import generate
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource, PostgresResource
from nova_assets.stack import Stack
from nova_assets.stack.sql_services import CdcService
from nova_assets.topics import EVENTS_TOPIC


def _clean_source(postgres: PostgresResource) -> None:
    """A clean source: the test owns the CDC tables, the slot and the publication."""
    with postgres.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS likes, comments, follows, posts, users, debezium_heartbeat CASCADE")
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'nova'")
        conn.execute("DROP PUBLICATION IF EXISTS dbz_publication")


def _load_until_mirrors_match(
    postgres: PostgresResource, kafka: KafkaResource, clickhouse: ClickHouseResource
) -> dict[str, set[tuple[str, ...]]]:
    """Run loaders until every mirror equals Postgres (asserted, table by table); returns the source state."""
    expected = source_state(postgres)
    got: dict[str, set[tuple[str, ...]]] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        Loader(clickhouse, kafka, IngestSettings(idle_exit_seconds=2.0)).run()
        got = mirror_state(clickhouse)
        if got == expected:
            break
    for table in MIRROR_COLUMNS:
        assert got[table] == expected[table], f"{table}: mirror differs from Postgres"
    return expected


@pytest.mark.timeout(600)
def test_cdc_mirrors_equal_postgres_across_a_restart(
    tmp_path: Path, stack: Stack, kafka: KafkaResource, clickhouse: ClickHouseResource
) -> None:
    postgres = PostgresResource(dsn=stack.env()["NOVA_POSTGRES_DSN"])
    _clean_source(postgres)
    # the stack's own supervised `nova cdc` process, pointed at this test's broker and database
    cdc = CdcService(
        tmp_path,
        0,
        {
            "NOVA_HOME": str(tmp_path),
            "NOVA_POSTGRES_DSN": postgres.dsn,
            "NOVA_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        },
    )
    cdc.start_and_wait(120)
    try:
        # 5% deletes: the mirrors' delete handling is exercised (the demo deletes far fewer)
        writer = threading.Thread(
            target=lambda: generate(postgres, rate=200, duration_s=8, users=50, delete_share=0.05)
        )
        writer.start()
        time.sleep(3)
        cdc.stop()  # mid-stream: changes keep coming while CDC is down
        writer.join()
        counts = generate(postgres, rate=200, duration_s=2, users=10, delete_share=0.05)
        assert counts["delete"] > 0 or counts["post"] > 0
        cdc.start_and_wait(120)

        expected = _load_until_mirrors_match(postgres, kafka, clickhouse)
        assert clickhouse.query("SELECT count() FROM dead_letters").result_rows == [(0,)]

        # deleted posts are gone from the mirror and from what recommendations read
        deleted = clickhouse.query(
            "SELECT count() FROM (SELECT id FROM posts GROUP BY id HAVING argMax(is_deleted, version) = 1)"
        ).result_rows[0][0]
        live = {r[0] for r in expected["posts"]}
        mirrored = {r[0] for r in clickhouse.query("SELECT toString(id) FROM posts FINAL").result_rows}
        assert mirrored == live and deleted > 0

        # live lag: commit in Postgres → visible in ClickHouse, measured by the loader; events
        # beside the changes, each lane on its own flush clock (an insert costs the server the
        # same for 4 rows as for 4,000: the changes' up to five tables flush less often)
        stop = threading.Event()
        holder: dict[str, object] = {}
        settings = IngestSettings(idle_exit_seconds=600, flush_interval_ms=100, cdc_flush_interval_ms=1000)
        loader = Loader(clickhouse, kafka, settings)
        ensure_topic(kafka, EVENTS_TOPIC)  # the loader assigns the topics that exist when it starts
        began = clickhouse.query("SELECT now64(3)").result_rows[0][0]
        worker = threading.Thread(target=lambda: holder.update(stats=loader.run(stop=stop)))
        worker.start()
        events = threading.Thread(target=lambda: produce_events(kafka, rate=300, duration_s=4))
        events.start()
        generate(postgres, rate=100, duration_s=4, users=5)
        events.join()
        time.sleep(2.5)
        stop.set()
        worker.join(60)
        seconds = (clickhouse.query("SELECT now64(3)").result_rows[0][0] - began).total_seconds()
        lag = holder["stats"].quantiles("cdc")  # type: ignore[attr-defined]
        assert lag and lag["p95_s"] < 5.0, lag
        # one insert, one ingested_at (DEFAULT now64(3) is evaluated once per insert)
        inserts = {
            table: clickhouse.query(
                f"SELECT uniqExact(ingested_at) FROM {table} WHERE ingested_at >= {{t:DateTime64(3)}}",
                parameters={"t": began},
            ).result_rows[0][0]
            for table in ("events", "posts", "likes")
        }
        assert inserts["events"] >= 2 * seconds, inserts  # ~10 flushes a second while events flow
        for table in ("posts", "likes"):
            assert 1 <= inserts[table] <= seconds / 1.0 + 2, (inserts, seconds)
    finally:
        cdc.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("publisher", ["java", "python"])
def test_cdc_changes_survive_a_broker_restart(
    tmp_path: Path, stack: Stack, clickhouse: ClickHouseResource, publisher: str
) -> None:
    """Changes Debezium sent before the broker restarted are still there to load: none is lost, whether
    the JVM publishes them (the default) or the Python handler does (NOVA_CDC_PUBLISHER=python)."""
    from nova_assets.core.cdc.publisher import javac

    if publisher == "java" and javac() is None:
        pytest.skip("no javac on this machine: nova cdc publishes through the Python handler")
    from nova_assets.core.process import free_port, free_port_block
    from nova_assets.stack.services import KafkaService, S3Service

    s3 = S3Service(tmp_path / "broker", free_port_block(10))
    broker = KafkaService(tmp_path / "broker", free_port(), storage=s3)
    s3.start_and_wait(60)
    broker.start_and_wait()
    kafka = KafkaResource(bootstrap_servers=broker.address, timeout_s=5, client_config={"log_level": 0})
    postgres = PostgresResource(dsn=stack.env()["NOVA_POSTGRES_DSN"])
    _clean_source(postgres)
    cdc = CdcService(
        tmp_path,
        0,
        {
            "NOVA_HOME": str(tmp_path),
            "NOVA_POSTGRES_DSN": postgres.dsn,
            "NOVA_KAFKA_BOOTSTRAP": broker.address,
            "NOVA_CDC_PUBLISHER": publisher,
        },
    )
    cdc.start_and_wait(120)
    assert cdc.status()["publisher"] == publisher
    try:
        generate(postgres, rate=200, duration_s=4, users=40)
        time.sleep(3)  # Debezium has sent them; nothing is loaded yet
        broker.stop()
        writer = threading.Thread(target=lambda: generate(postgres, rate=100, duration_s=3, users=5))
        writer.start()  # changes made while the broker is down wait in Debezium's producer
        time.sleep(2)
        broker.start_and_wait()
        writer.join()
        _load_until_mirrors_match(postgres, kafka, clickhouse)
    finally:
        cdc.stop()
        broker.stop()
        s3.stop()
