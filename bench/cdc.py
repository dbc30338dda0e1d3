"""`nova bench cdc`: Postgres commit → visible in ClickHouse, through Debezium, Tansu and the loader.

At 1,000 changes/s for 60 s from `nova generate app`: CDC lag P50/P95/P99 (Postgres commit time
`__ts_ms` → the loader's insert returning) next to the guide's target (P95 < 2 s, acceptable
5 s); then a burst as fast as Postgres takes it, for the throughput ceiling; then the mirrors are
compared with Postgres row by row (`changes_lost` counts rows that differ).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from bench.common import report
from nova_assets.defs.cdc.verify import differences, mirror_state, source_state
from nova_assets.defs.ingestion.loader import IngestSettings, Loader
from nova_assets.defs.schema.ddl import apply_all
from nova_assets.defs.schema.sql_files import Renderer
from nova_assets.resources import ClickHouseResource, KafkaResource, PostgresResource
from nova_assets.stack.manager import CdcService, KafkaService, PostgresService
from nova_assets.stack.process import free_port

RATE, SECONDS, BURST_SECONDS = 1000, 60, 15
GENERATOR = """
import sys, orjson
from nova_assets.generate.app import generate
from nova_assets.resources import PostgresResource
print(orjson.dumps(generate(PostgresResource(dsn=sys.argv[1]), rate=float(sys.argv[2]),
                            duration_s=float(sys.argv[3]), users=int(sys.argv[4]))).decode(), flush=True)
"""


def _generate(dsn: str, rate: float, seconds: float, users: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", GENERATOR, dsn, str(rate), str(seconds), str(users)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def run(as_json: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nova-bench-cdc-") as tmp:
        home = Path(tmp)
        broker = KafkaService(home, free_port())
        pg = PostgresService(home, free_port())
        broker.start_and_wait()
        pg.start_and_wait()
        cdc = None
        try:
            kafka = KafkaResource(bootstrap_servers=broker.address, client_config={"log_level": 0})
            postgres = PostgresResource(dsn=pg.dsn())
            ch = ClickHouseResource(url=f"chdb://{tmp}/clickhouse")
            with ch.session() as client:
                apply_all(client, Renderer("nova"))
            cdc = CdcService(home, 0, {"NOVA_HOME": tmp, **broker.env(), **pg.env()})
            cdc.start_and_wait(180)  # JVM start and initial snapshot

            stop = threading.Event()
            holder: dict[str, object] = {}
            loader = Loader(
                ch, kafka, IngestSettings(idle_exit_seconds=3600, max_run_seconds=3600), log=lambda _m: None
            )
            worker = threading.Thread(target=lambda: holder.update(stats=loader.run(stop=stop)))
            worker.start()
            steady = _generate(pg.dsn(), RATE, SECONDS, 2000)
            time.sleep(5)
            stop.set()
            worker.join(120)
            steady_stats = holder["stats"]
            lag = steady_stats.quantiles("cdc")  # type: ignore[attr-defined]
            steady_rows = sum(steady_stats.rows.values())  # type: ignore[attr-defined]

            # burst: as fast as one Postgres connection writes, measured until visible in ClickHouse
            stop2 = threading.Event()
            loader2 = Loader(
                ch, kafka, IngestSettings(idle_exit_seconds=3600, max_run_seconds=3600), log=lambda _m: None
            )
            worker2 = threading.Thread(target=lambda: holder.update(burst=loader2.run(stop=stop2)))
            worker2.start()
            started = time.time()
            burst = _generate(pg.dsn(), 100_000, BURST_SECONDS, 10)
            # wait until the last change is in ClickHouse
            last_commit = 0.0
            for _ in range(600):
                time.sleep(0.5)
                newest = ch.query(
                    "SELECT max(ingested_at) FROM (SELECT ingested_at FROM likes UNION ALL "
                    "SELECT ingested_at FROM posts UNION ALL SELECT ingested_at FROM comments)"
                ).result_rows[0][0]
                if newest.timestamp() < time.time() - 3 and newest.timestamp() > started:
                    last_commit = newest.timestamp()
                    break
            stop2.set()
            worker2.join(120)
            burst_rows = sum(holder["burst"].rows.values())  # type: ignore[attr-defined]
            ceiling = burst_rows / max(0.001, (last_commit or time.time()) - started)
            lost = differences(source_state(postgres), mirror_state(ch))
            dead = int(ch.query("SELECT count() FROM dead_letters").result_rows[0][0])
        finally:
            if cdc is not None:
                cdc.stop()
            pg.stop()
            broker.stop()
    summary = {
        "changes_per_s": round(steady["changes"] / SECONDS, 1),
        "changes_generated": steady["changes"] + burst["changes"],
        "rows_loaded_steady": steady_rows,
        "cdc_lag_p50_s": round(lag["p50_s"], 3),
        "cdc_lag_p95_s": round(lag["p95_s"], 3),
        "cdc_lag_p99_s": round(lag["p99_s"], 3),
        "cdc_lag_max_s": round(lag["max_s"], 3),
        "burst_changes": burst["changes"],
        "throughput_ceiling_per_s": round(ceiling),
        "changes_lost": lost,
        "dead_letters": dead,
    }
    report(
        f"nova bench cdc: {RATE}/s for {SECONDS} s, then a {BURST_SECONDS} s burst "
        "(embedded Postgres, Debezium, Tansu, chDB)",
        [
            ("changes/s (steady)", f"{summary['changes_per_s']:,}", f"{steady['changes']:,} changes"),
            ("CDC lag P50", f"{lag['p50_s']:.3f} s", "guide target P95 < 2 s, acceptable 5 s"),
            ("CDC lag P95", f"{lag['p95_s']:.3f} s", ""),
            ("CDC lag P99", f"{lag['p99_s']:.3f} s", f"max {lag['max_s']:.3f} s"),
            ("throughput ceiling", f"{ceiling:,.0f}/s", f"burst of {burst['changes']:,} changes, commit → visible"),
            ("changes lost", f"{lost}", f"rows differing between Postgres and the mirrors; dead letters {dead}"),
        ],
        summary,
        as_json,
    )
    return summary
