"""`nova bench ingest`: Kafka → ClickHouse throughput and event-to-visible latency.

In one run, on one Tansu broker and one chDB directory started for the benchmark:
(a) raw ceilings: consume-only rate from Tansu, and the insert rate of ready-made rows into
    `events` (with its two materialized views);
(b) the naive baseline of the common Dagster/Kafka demo: poll one message, json.loads it, insert
    it as one row (measured on a sample; it is too slow for a million);
(c) the project's Loader (the code the ingestion runs execute) on 1M events;
(d) a steady 10k events/s for 60 s from a separate producer process: event-to-visible P50/P95/P99;
(e) produce and consume ceilings of Tansu on its two storages, memory (above) and S3 on the local
    SeaweedFS (the stack's default, durable), with 200k events each.

`nova bench ingest --shards N` measures instead the sharded ingestion (NOVA_INGEST_SHARDS): one
loader process against N, each owning the partitions p with p % N == k, on the same 6-partition
topic and the same local ClickHouse server, in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import TopicPartition

from bench.common import SMOKE, report
from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.ingestion.messages import EVENT_COLUMNS, EVENTS_TOPIC, decode_event
from nova_assets.core.process import free_port, free_port_block
from nova_assets.core.schema.ddl import apply_all
from nova_assets.core.schema.sql_files import Renderer
from nova_assets.core.world.demo import World
from nova_assets.generate.events import ensure_topic, produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack.services import KafkaService, S3Service

TOTAL, NAIVE_SAMPLE = (20_000, 50) if SMOKE else (1_000_000, 3_000)
STEADY_RATE, STEADY_SECONDS = (1_000, 5) if SMOKE else (10_000, 60)
STORAGE_SAMPLE = 5_000 if SMOKE else 200_000

PRODUCER = """
import sys
from nova_assets.generate.events import produce_events
from nova_assets.resources import KafkaResource
kafka = KafkaResource(bootstrap_servers=sys.argv[1])
counts = produce_events(kafka, rate=float(sys.argv[2]), duration_s=float(sys.argv[3]))
print(counts["valid"], flush=True)
"""


def _consume_ceiling(kafka: KafkaResource, n: int) -> float:
    consumer = kafka.consumer(**{"group.id": "bench-ceiling"})
    consumer.assign([TopicPartition(EVENTS_TOPIC, 0, 0)])
    got = 0
    started = time.perf_counter()
    while got < n:
        got += len(consumer.consume(num_messages=10_000, timeout=1.0))
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def _insert_ceiling(ch: ClickHouseResource, pop: World, n: int) -> float:
    rows = [decode_event(v, EVENTS_TOPIC, 0, i).row for i, v in enumerate(pop.events(n))]
    batch = 100_000
    elapsed = 0.0
    with ch.session() as client:
        for start in range(0, n, batch):
            block = b"\n".join(rows[start : start + batch])
            t0 = time.perf_counter()
            client.raw_insert("events", EVENT_COLUMNS, insert_block=block, fmt="JSONCompactEachRow")
            elapsed += time.perf_counter() - t0
        client.command("TRUNCATE TABLE events")
        client.command("TRUNCATE TABLE post_metrics_1h")
        client.command("TRUNCATE TABLE user_author_daily")
    return n / elapsed


def _naive(kafka: KafkaResource, ch: ClickHouseResource, n: int) -> float:
    """One message at a time, as the usual demo does: poll, json.loads, insert one row, commit."""
    consumer = kafka.consumer(**{"group.id": "bench-naive"})
    consumer.assign([TopicPartition(EVENTS_TOPIC, 0, 0)])
    columns = ["event_id", "event_time", "user_id", "post_id", "author_id", "action", "dwell_ms", "device", "app_ver"]
    done = 0
    started = time.perf_counter()
    with ch.session() as client:
        client.command("CREATE TABLE IF NOT EXISTS naive_events AS events")
        while done < n:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            event = json.loads(msg.value())
            event["event_time"] = event["event_time"].replace("T", " ").rstrip("Z")
            client.insert("naive_events", [[event[c] for c in columns]], column_names=columns)
            consumer.commit(message=msg, asynchronous=False)
            done += 1
        elapsed = time.perf_counter() - started
        # its thousands of one-row parts would be merged in the background during the next
        # measurement, stealing the loader's CPU: the baseline's leftovers go with it
        client.command("DROP TABLE naive_events SYNC")
    consumer.close()
    return n / elapsed


def _storage_ceilings(home: Path, pop: World, s3: bool) -> tuple[float, float]:
    """Produce and consume rates of STORAGE_SAMPLE events on a fresh broker (memory or S3)."""
    storage = S3Service(home, free_port_block(10)) if s3 else None
    broker = KafkaService(home, free_port(), storage=storage)
    try:
        if storage is not None:
            storage.start_and_wait(60)
        broker.start_and_wait()
        kafka = KafkaResource(bootstrap_servers=broker.address, client_config={"log_level": 0})
        ensure_topic(kafka)
        t0 = time.perf_counter()
        produce_events(kafka, rate=0, duration_s=3600, total=STORAGE_SAMPLE, world=pop)
        produce = STORAGE_SAMPLE / (time.perf_counter() - t0)
        return produce, _consume_ceiling(kafka, STORAGE_SAMPLE)
    finally:
        broker.stop()
        if storage is not None:
            storage.stop()


SHARD_TOTAL = 12_000 if SMOKE else 600_000
SHARD_PARTITIONS = 6
SHARD_LOADER = """
import sys, time
from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.resources import ClickHouseResource, KafkaResource
url, database, bootstrap, group, shard, shards = sys.argv[1:7]
kafka = KafkaResource(bootstrap_servers=bootstrap, group_id=group, client_config={"log_level": 0})
settings = IngestSettings(idle_exit_seconds=2.0, max_run_seconds=900, shard=int(shard), shards=int(shards))
stats = Loader(ClickHouseResource(url=url, database=database), kafka, settings, log=lambda _m: None).run()
print(sum(stats.rows.values()), time.time(), flush=True)
"""


def _sharded_load(ch_url: str, database: str, bootstrap: str, shards: int) -> tuple[float, int]:
    """Seconds until N loader processes (one per shard) have loaded the topic, and rows they loaded."""
    started = time.time()
    group = f"bench-{database}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARD_LOADER, ch_url, database, bootstrap, group, str(k), str(shards)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(shards)
    ]
    rows, finished = 0, started
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        n, done = out.split()
        rows += int(n)
        finished = max(finished, float(done) - 2.0)  # minus the idle wait that ends a loader
    return finished - started, rows


def run_shards(shards: int, as_json: bool = False) -> dict[str, float]:
    """One loader against `shards` loaders over the same 6-partition topic, same run."""
    from bench.common import clickhouse_server

    with tempfile.TemporaryDirectory(prefix="nova-bench-shards-") as tmp, clickhouse_server(Path(tmp)) as ch:
        broker = KafkaService(Path(tmp), free_port())
        broker.start_and_wait()
        try:
            kafka = KafkaResource(bootstrap_servers=broker.address, client_config={"log_level": 0})
            produce_events(kafka, rate=0, duration_s=3600, total=SHARD_TOTAL, partitions=SHARD_PARTITIONS)
            figures = {}
            for n in (1, shards):
                database = f"shards_{n}"
                db = ClickHouseResource(url=ch.url, database=database)
                with db.session() as client:
                    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # our own name
                    apply_all(client, Renderer(database))
                seconds, loaded = _sharded_load(ch.url, database, broker.address, n)
                total, unique = db.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
                figures[n] = {"seconds": seconds, "loaded": loaded, "rows": int(total), "unique": int(unique)}
        finally:
            broker.stop()
    one, many = figures[1], figures[shards]
    summary = {
        "events": SHARD_TOTAL,
        "partitions": SHARD_PARTITIONS,
        "shards": shards,
        "one_loader_events_per_s": round(one["rows"] / one["seconds"]),
        "sharded_events_per_s": round(many["rows"] / many["seconds"]),
        "speedup": round(one["seconds"] / many["seconds"], 2),
        "one_loader_rows": one["rows"],
        "sharded_rows": many["rows"],
        "sharded_unique_event_ids": many["unique"],
    }
    report(
        f"nova bench ingest --shards {shards}: {SHARD_TOTAL:,} events on {SHARD_PARTITIONS} partitions "
        "(Tansu + the local ClickHouse server, 2 cores)",
        [
            (
                "1 loader",
                f"{summary['one_loader_events_per_s']:,}/s",
                f"{one['rows']:,} rows in {one['seconds']:.1f} s",
            ),
            (
                f"{shards} shards in parallel",
                f"{summary['sharded_events_per_s']:,}/s",
                f"{many['rows']:,} rows ({many['unique']:,} unique) in {many['seconds']:.1f} s; "
                f"x{summary['speedup']} of one loader",
            ),
        ],
        summary,
        as_json,
    )
    return summary


def run(as_json: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nova-bench-ingest-") as tmp:
        broker = KafkaService(Path(tmp), free_port())
        broker.start_and_wait()
        try:
            kafka = KafkaResource(bootstrap_servers=broker.address, client_config={"log_level": 0})
            ch = ClickHouseResource(url=f"chdb://{tmp}/clickhouse")
            with ch.session() as client:
                apply_all(client, Renderer("nova"))
            ensure_topic(kafka)
            pop = World()
            t0 = time.perf_counter()
            produce_events(kafka, rate=0, duration_s=3600, total=TOTAL, world=pop)
            produce_s = time.perf_counter() - t0
            consume_ceiling = _consume_ceiling(kafka, TOTAL)
            insert_ceiling = _insert_ceiling(ch, pop, 200_000)
            naive = _naive(kafka, ch, NAIVE_SAMPLE)

            settings = IngestSettings(idle_exit_seconds=1.0, max_run_seconds=600, max_batch_rows=100_000)
            t0 = time.perf_counter()
            stats = Loader(ch, kafka, settings, log=lambda _m: None).run()
            loader_s = time.perf_counter() - t0 - settings.idle_exit_seconds
            loaded = sum(stats.rows.values())
            print(f"  loader details: {stats.metadata()}", file=sys.stderr)
            events_per_s = loaded / loader_s

            # (d) steady stream from another process, the loader running alongside
            stop = threading.Event()
            steady_settings = IngestSettings(idle_exit_seconds=3600, max_run_seconds=3600, flush_interval_ms=200)
            steady_loader = Loader(ch, kafka, steady_settings, log=lambda _m: None)
            holder: dict[str, object] = {}
            worker = threading.Thread(target=lambda: holder.update(stats=steady_loader.run(stop=stop)))
            worker.start()
            producer = subprocess.run(
                [sys.executable, "-c", PRODUCER, broker.address, str(STEADY_RATE), str(STEADY_SECONDS)],
                capture_output=True,
                text=True,
                check=True,
            )
            produced_steady = int(producer.stdout.strip())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows_now = ch.query("SELECT count() FROM events").result_rows[0][0]
                if rows_now >= TOTAL + produced_steady:
                    break
                time.sleep(0.2)
            stop.set()
            worker.join(60)
            steady = holder["stats"]
            q = steady.quantiles("e2v")  # type: ignore[attr-defined]
            print(f"  steady details: {steady.metadata()}", file=sys.stderr)  # type: ignore[attr-defined]
            rows_in_ch = int(ch.query("SELECT count() FROM events").result_rows[0][0])
            unique = int(ch.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0])
        finally:
            broker.stop()
        mem_produce, mem_consume = _storage_ceilings(Path(tmp) / "memory", pop, s3=False)
        s3_produce, s3_consume = _storage_ceilings(Path(tmp) / "s3", pop, s3=True)
    produced = TOTAL + produced_steady
    summary = {
        "events_produced": produced,
        "rows_in_clickhouse": rows_in_ch,
        "unique_event_ids": unique,
        "events_per_s": round(events_per_s),
        "naive_events_per_s": round(naive, 1),
        "consume_ceiling_per_s": round(consume_ceiling),
        "insert_ceiling_per_s": round(insert_ceiling),
        "produce_per_s": round(TOTAL / produce_s),
        "steady_rate_per_s": STEADY_RATE,
        "steady_events": produced_steady,
        "e2v_p50_s": round(q["p50_s"], 3),
        "e2v_p95_s": round(q["p95_s"], 3),
        "e2v_p99_s": round(q["p99_s"], 3),
        "e2v_max_s": round(q["max_s"], 3),
        "slowest_commit_s": round(steady.slowest_commit_s, 3),  # type: ignore[attr-defined]
        "memory_produce_per_s": round(mem_produce),
        "memory_consume_per_s": round(mem_consume),
        "s3_produce_per_s": round(s3_produce),
        "s3_consume_per_s": round(s3_consume),
    }
    lower = min(consume_ceiling, insert_ceiling)
    report(
        f"nova bench ingest: {TOTAL:,} events + {STEADY_RATE:,}/s for {STEADY_SECONDS} s (Tansu + chDB, 2 cores)",
        [
            ("project loader, 1M events", f"{events_per_s:,.0f}/s", f"{events_per_s / lower:.0%} of the lower ceiling"),
            ("naive (1 msg per insert)", f"{naive:,.1f}/s", f"loader is {events_per_s / naive:,.0f}x faster"),
            ("consume-only ceiling", f"{consume_ceiling:,.0f}/s", "confluent-kafka from Tansu"),
            ("insert-only ceiling", f"{insert_ceiling:,.0f}/s", "JSONCompactEachRow, 100k rows, 2 MVs"),
            ("e2v P50 @10k/s", f"{q['p50_s']:.3f} s", "goal P95 <= 1 s, P99 <= 2 s (guide: < 3 s)"),
            ("e2v P95 @10k/s", f"{q['p95_s']:.3f} s", ""),
            ("e2v P99 @10k/s", f"{q['p99_s']:.3f} s", f"max {q['max_s']:.3f} s"),
            ("rows in ClickHouse", f"{rows_in_ch:,}", f"produced {produced:,}, unique ids {unique:,}"),
            (
                "Tansu memory: produce / consume",
                f"{mem_produce:,.0f} / {mem_consume:,.0f} /s",
                "200k events, fresh broker",
            ),
            ("Tansu S3 (SeaweedFS): produce / consume", f"{s3_produce:,.0f} / {s3_consume:,.0f} /s", "durable"),
        ],
        summary,
        as_json,
    )
    return summary
