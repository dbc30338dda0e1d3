"""Where the project's settings come from: environment variables only, with local defaults.

Every setting has one name (`NOVA_*`) used by the stack, the CLI, the resources and the docs.
"""

from __future__ import annotations

import os
from pathlib import Path

from nova_assets.errors import ConfigError

NOVA_HOME = "NOVA_HOME"
CLICKHOUSE_URL = "NOVA_CLICKHOUSE_URL"
CLICKHOUSE_DDL_URL = "NOVA_CLICKHOUSE_DDL_URL"  # the schema's owner (DDL); empty: NOVA_CLICKHOUSE_URL
CLICKHOUSE_CLUSTER = "NOVA_CLICKHOUSE_CLUSTER"
CLICKHOUSE_DATABASE = "NOVA_CLICKHOUSE_DATABASE"
CLICKHOUSE_POOL = "NOVA_CLICKHOUSE_POOL"
CLICKHOUSE_QUERY_STATS = "NOVA_CLICKHOUSE_QUERY_STATS"  # local server: a file for request counts per query shape
CLICKHOUSE_BATCH_NICE = "NOVA_CLICKHOUSE_BATCH_NICE"  # nice of batch queries' threads, 0..19 (default 19; 0 = off)
DAGSTER_NICE = "NOVA_DAGSTER_NICE"  # nice of the local Dagster processes and their runs, 0..19 (default 5)
KAFKA_BOOTSTRAP = "NOVA_KAFKA_BOOTSTRAP"
REDIS_URL = "NOVA_REDIS_URL"
REDIS_CLUSTER = "NOVA_REDIS_CLUSTER"
KAFKA_STORAGE = "NOVA_KAFKA_STORAGE"  # local Tansu: memory (default) or s3 (durable, on the local SeaweedFS)
POSTGRES_DSN = "NOVA_POSTGRES_DSN"
KAFKA_CONFIG = "NOVA_KAFKA_CONFIG"  # librdkafka pass-through (SASL, TLS) as a JSON object
INGEST_SHARDS = "NOVA_INGEST_SHARDS"  # parallel loaders, each owning a fixed subset of partitions (default 1)
INGEST_SENSOR_INTERVAL = "NOVA_INGEST_SENSOR_INTERVAL"  # seconds between sensor ticks (default 5)
INGEST_HEARTBEAT_STALE = "NOVA_INGEST_HEARTBEAT_STALE"  # a run silent this long is failed (default 45)
INGEST_RUN_SECONDS = "NOVA_INGEST_RUN_SECONDS"  # how long one ingestion run keeps consuming (default 600)
INGEST_IDLE_EXIT_SECONDS = "NOVA_INGEST_IDLE_EXIT_SECONDS"  # a run ends after this long without messages (30)
INGEST_PACED = "NOVA_INGEST_PACED"  # pace a loader's fetches at the stream's head (default yes)
INGEST_HANDOVER_LEAD = "NOVA_INGEST_HANDOVER_LEAD_SECONDS"  # launch the next run this long before one ends (30)
RECOMMENDATIONS_CRON = "NOVA_RECOMMENDATIONS_CRON"
CACHE_CRON = "NOVA_CACHE_CRON"
TASTES_CRON = "NOVA_TASTES_CRON"  # when the taste model is retrained and the score's weights refitted
DEMO_WORLD = "NOVA_DEMO_WORLD"  # "seed:users" of the demo world feeding this ClickHouse (nova dev): adds its oracle
SLO_CRON = "NOVA_SLO_CRON"
SLO_OVERRIDES = "NOVA_SLO_OVERRIDES"  # JSON: {"cdc_lag_s": {"target": 1}}
ALERT_WEBHOOK = "NOVA_ALERT_WEBHOOK"  # failed ERROR checks and runs are POSTed here as JSON
CDC_STAGE_LOG = "NOVA_CDC_STAGE_LOG"  # a file: one line per change with its stage times (nova bench cdc)
CDC_PUBLISHER = "NOVA_CDC_PUBLISHER"  # java (default: the JVM sends to Kafka) or python (a handler per batch)
STACK_SERVICES = "NOVA_STACK_SERVICES"  # which local services `nova stack up` manages
REDIS_MAXMEMORY = "NOVA_REDIS_MAXMEMORY"  # the local valkey's maxmemory (default 1gb)

#: What a deployment sets for the code that runs Dagster definitions (code server, daemon,
#: webserver, every run container): the servers, their credentials and their shape. The
#: production contract tests hold docker/ to this list.
DEPLOYMENT_SETTINGS = (
    CLICKHOUSE_URL, CLICKHOUSE_DDL_URL, CLICKHOUSE_CLUSTER, KAFKA_BOOTSTRAP, KAFKA_CONFIG,
    REDIS_URL, REDIS_CLUSTER, INGEST_SHARDS,
)  # fmt: skip
#: What the read path (`nova serve`) needs: it never writes and never touches Kafka.
SERVING_SETTINGS = (CLICKHOUSE_URL, CLICKHOUSE_CLUSTER, REDIS_URL, REDIS_CLUSTER)

#: Local stack ports. Chosen to stay clear of a system Kafka (9092), Redis (6379), Postgres (5432).
PORT_SETTINGS = {
    "clickhouse": ("NOVA_CLICKHOUSE_PORT", 18123),
    "s3": ("NOVA_S3_PORT", 18333),  # SeaweedFS: S3 on this port, its other parts on the next nine
    "kafka": ("NOVA_KAFKA_PORT", 19092),
    "redis": ("NOVA_REDIS_PORT", 16379),
    "postgres": ("NOVA_POSTGRES_PORT", 15432),
}


def nova_home() -> Path:
    """State directory of the local stack (default `./.nova`)."""
    return Path(os.environ.get(NOVA_HOME) or ".nova").resolve()


def env_str(name: str, default: str = "") -> str:
    """Read a text setting (empty or unset: the default)."""
    return os.environ.get(name) or default


def env_int(name: str, default: int, *, minimum: int = 1, maximum: int = 65535) -> int:
    """Read an integer setting, naming the variable and value when it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, "is not an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(name, raw, f"must be between {minimum} and {maximum}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """Read a float setting, naming the variable and value when it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "is not a number") from None
    if value < minimum:
        raise ConfigError(name, raw, f"must be at least {minimum:g}")
    return value


def port_for(service: str) -> int:
    """The port the local stack uses for a service, from `NOVA_<SERVICE>_PORT`."""
    name, default = PORT_SETTINGS[service]
    return env_int(name, default, minimum=1024)


def env_bool(name: str, default: bool = False) -> bool:
    """Read a yes/no setting (1/true/yes or 0/false/no), naming the variable and value otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, raw, "is not one of 1/true/yes/on or 0/false/no/off")


def kafka_storage() -> str:
    """Where the local Kafka keeps topics: `memory` (default) or `s3` (durable, SeaweedFS)."""
    value = os.environ.get(KAFKA_STORAGE, "").strip().lower() or "memory"
    if value not in ("memory", "s3"):
        raise ConfigError(KAFKA_STORAGE, value, "is neither memory nor s3")
    return value
