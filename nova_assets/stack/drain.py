"""Before the memory-only local broker stops, load what it holds that ClickHouse does not.

The local Tansu keeps topics in memory (its durable S3 storage is opt-in, see README): stopping
it forgets every message, including CDC changes Debezium will never send again. `nova stack
down` therefore drains first. It runs the ingestion loader itself (exactly once: it skips what is
already loaded, and loads with the same dedup tokens and incarnations). When Dagster could be
loading at the same moment (this NOVA_HOME's `dagster dev`, daemon or a run worker is alive), it
waits for the lag to reach zero instead: two loaders at once would break the one-loader rule
that exactly-once rests on.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nova_assets import settings

STALLED_S = 30.0  # waiting on Dagster gives up when the lag has not shrunk for this long


@dataclass
class DrainResult:
    unloaded: int  # messages not in ClickHouse when the drain began
    loaded: int  # rows and dead letters the drain wrote
    left: int  # messages still unloaded when it gave up (lost when the broker stops)
    how: str  # "nothing to do", "loaded", "waited for Dagster", or why it could not


def _can_load(cmdline: list[str]) -> bool:
    """Whether a Dagster process may launch or run a load: `dagster dev`, its daemon (launches
    the sensor's runs) or a run worker. A code server cannot: a killed `dagster dev` leaves its
    `dagster api grpc` behind for minutes, and waiting on that orphan drained nothing."""
    names = [Path(part).name for part in cmdline]
    if any(name == "dagster-daemon" or name.startswith(("execute_run", "execute_step")) for name in names):
        return True
    return any(name == "dagster" and nxt == "dev" for name, nxt in itertools.pairwise(names))


def _dagster_busy(dagster_home: Path) -> str:
    """Why Dagster may be loading now ('' when not): a live `dagster dev`, daemon or run of this
    Dagster home, which `nova dev` starts with DAGSTER_HOME set to it."""
    import psutil

    home = str(dagster_home.resolve())
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.pid == os.getpid() or proc.environ().get("DAGSTER_HOME") != home:
                continue
            if _can_load(proc.cmdline()):  # not a shell that merely exports it, nor a code server
                return f"Dagster (pid {proc.pid}, {proc.info['name']}) runs on this NOVA_HOME"
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return ""


def drain(
    kafka_bootstrap: str,
    clickhouse_url: str,
    dagster_home: Path,
    echo: Callable[[str], None] = print,
    timeout_s: float = 120.0,
    stalled_s: float = STALLED_S,
) -> DrainResult:
    """Load (or wait for Dagster to load) every message the broker holds and ClickHouse does not."""
    from nova_assets.core.ingestion.loader import IngestSettings, Loader
    from nova_assets.core.ingestion.offsets import partition_lags
    from nova_assets.resources.clickhouse import ClickHouseResource
    from nova_assets.resources.kafka import KafkaResource

    kafka = KafkaResource(bootstrap_servers=kafka_bootstrap, timeout_s=5, client_config={"log_level": 0})
    clickhouse = ClickHouseResource(url=clickhouse_url, database=settings.env_str(settings.CLICKHOUSE_DATABASE, "nova"))

    def unloaded() -> int:
        consumer = kafka.consumer()
        try:  # ends as fetches carry them: this broker's ListOffsets under-reports the end of a topic
            return sum(p.lag for p in partition_lags(consumer, timeout_s=5, verify_s=1.0, verify_all=True))
        finally:
            consumer.close()

    before = unloaded()
    if before == 0:
        return DrainResult(0, 0, 0, "nothing to do")
    tables = {r[0] for r in clickhouse.query("SHOW TABLES").result_rows}
    if not {"events", "dead_letters", "kafka_incarnations", "kafka_checkpoints"} <= tables:
        return DrainResult(before, 0, before, f"the schema is not applied in ClickHouse database {clickhouse.database}")
    busy = _dagster_busy(dagster_home)
    if busy:
        echo(f"kafka: {before} messages not loaded yet and {busy}; waiting up to {timeout_s:g} s for it to load them")
        deadline = time.monotonic() + timeout_s
        left, progressed = before, time.monotonic()
        while left and time.monotonic() < deadline and time.monotonic() - progressed < stalled_s:
            time.sleep(1.0)
            now = unloaded()
            if now < left:
                progressed = time.monotonic()
            left = now
        how = "waited for Dagster" if not left else "waited for Dagster, which is not loading them (is the sensor on?)"
        return DrainResult(before, before - left, left, how)
    echo(f"kafka: loading {before} messages into ClickHouse before the broker forgets them")
    stats = Loader(
        clickhouse,
        kafka,
        IngestSettings(idle_exit_seconds=2.0, max_run_seconds=timeout_s),
        log=lambda _line: None,
        run_id="stack-down-drain",
        log_warning=lambda line: echo(f"kafka: {line}"),
    ).run()
    left = unloaded()
    return DrainResult(before, stats.messages, left, "loaded")
