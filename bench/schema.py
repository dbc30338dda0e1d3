"""`nova bench schema`: 1M events through the materialized views, and the user-timeline query.

Baselines in the same run: the same events in a table sorted by event_time only (what the
timeline query costs without the user-first sorting key), and the guide's targets.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time

from bench.common import SMOKE, percentile, report
from nova_assets.core.schema.ddl import apply_all
from nova_assets.core.schema.queries import USER_TIMELINE
from nova_assets.core.schema.sql_files import Renderer
from nova_assets.resources.clickhouse import ClickHouseResource

EVENTS, USERS, QUERIES = (20_000, 2_000, 20) if SMOKE else (1_000_000, 100_000, 200)

GENERATE = """
INSERT INTO {table} (event_id, event_time, user_id, post_id, author_id, action, dwell_ms, device, app_ver)
SELECT
    generateUUIDv4(number),
    now64(3) - toIntervalMillisecond(rand(1) % (30 * 86400000)),
    reinterpretAsUUID(MD5(concat('u', toString(toUInt32(pow(rand(2) / 4294967295, 2) * {users}))))),
    reinterpretAsUUID(MD5(concat('p', toString(toUInt32(pow(rand(3) / 4294967295, 3) * 200000))))),
    reinterpretAsUUID(MD5(concat('a', toString(toUInt32(pow(rand(4) / 4294967295, 2) * 20000))))),
    ['view','view','view','view','view','view','view','view','click','click','like','comment','share']
        [rand(5) % 13 + 1],
    rand(6) % 30000,
    ['ios','android','web'][rand(7) % 3 + 1],
    '5.2.0'
FROM numbers({n})
"""


def run(as_json: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nova-bench-schema-") as tmp:
        ch = ClickHouseResource(url=f"chdb://{tmp}/clickhouse")
        renderer = Renderer("nova")
        with ch.session() as client:
            apply_all(client, renderer)
            started = time.perf_counter()
            client.command(GENERATE.format(table="events", users=USERS, n=EVENTS))
            insert_s = time.perf_counter() - started
            client.command("CREATE TABLE events_by_time AS events ENGINE = MergeTree ORDER BY event_time")
            client.command(GENERATE.format(table="events_by_time", users=USERS, n=EVENTS))
            users = [
                r[0]
                for r in client.query(
                    "SELECT user_id FROM events GROUP BY user_id ORDER BY cityHash64(user_id) LIMIT {n:UInt32}",
                    parameters={"n": QUERIES},
                ).result_rows
            ]
            since = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)

            def timeline(table: str) -> list[float]:
                sql = USER_TIMELINE.replace("FROM events", f"FROM {table}")
                client.query(sql, parameters={"user_id": users[0], "since": since, "limit": 100})  # warm
                out = []
                for user in users:
                    t0 = time.perf_counter()
                    client.query(sql, parameters={"user_id": user, "since": since, "limit": 100})
                    out.append((time.perf_counter() - t0) * 1000)
                return out

            ours = timeline("events")
            base = timeline("events_by_time")
            mv_rows = client.query("SELECT sum(views + clicks + likes + comments + shares) FROM post_metrics_1h")
            assert mv_rows.result_rows[0][0] == EVENTS, "materialized view lost or doubled rows"
    summary = {
        "events": EVENTS,
        "insert_1m_s": round(insert_s, 3),
        "insert_rows_per_s": round(EVENTS / insert_s),
        "timeline_p50_ms": round(percentile(ours, 50), 2),
        "timeline_p95_ms": round(percentile(ours, 95), 2),
        "baseline_time_sorted_p50_ms": round(percentile(base, 50), 2),
        "baseline_time_sorted_p95_ms": round(percentile(base, 95), 2),
        "guide_target_ms": 100,
    }
    report(
        f"nova bench schema: {EVENTS:,} events, 2 materialized views, {QUERIES} timeline queries (chDB, 1 process)",
        [
            ("insert 1M events via MVs", f"{insert_s:.2f} s", f"{EVENTS / insert_s:,.0f} rows/s"),
            (
                "timeline P50",
                f"{summary['timeline_p50_ms']} ms",
                f"time-sorted table: {summary['baseline_time_sorted_p50_ms']} ms",
            ),
            (
                "timeline P95",
                f"{summary['timeline_p95_ms']} ms",
                f"time-sorted table: {summary['baseline_time_sorted_p95_ms']} ms; guide target < 100 ms",
            ),
        ],
        summary,
        as_json,
    )
    return summary
