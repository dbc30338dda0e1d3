"""Latencies read where users read them (the columns the SLO checks read), and the timelines a
failed rung prints so its cause is visible: events and runs by 10 s, CDC changes by arrival."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import dagster as dg

from bench.parts import reads
from nova_assets.resources import ClickHouseResource
from nova_assets.topics import APP_TABLES

MIRRORS = APP_TABLES
CHECK_WINDOW_S = 300  # the SLO checks judge the last 5 minutes


def e2v(ch: ClickHouseResource, start: float, end: float) -> dict[str, float]:
    """Event-to-visible of the events produced in [start, end): what the SLO check reads."""
    rows = ch.query(
        "SELECT dateDiff('millisecond', event_time, ingested_at) / 1000.0 FROM events "
        "WHERE event_time >= fromUnixTimestamp64Milli({a:Int64}) AND event_time < fromUnixTimestamp64Milli({b:Int64})",
        parameters={"a": int(start * 1000), "b": int(end * 1000)},
    ).result_rows
    return reads.summary([r[0] for r in rows])


def cdc_lag(ch: ClickHouseResource, start: float, end: float) -> dict[str, float]:
    """Commit in Postgres → visible in ClickHouse, for the changes committed in [start, end)."""
    union = " UNION ALL ".join(
        f"SELECT dateDiff('millisecond', source_ts, ingested_at) / 1000.0 AS lag FROM {t} "
        "WHERE source_ts >= fromUnixTimestamp64Milli({a:Int64}) AND source_ts < fromUnixTimestamp64Milli({b:Int64})"
        for t in MIRRORS
    )
    rows = ch.query(union, parameters={"a": int(start * 1000), "b": int(end * 1000)}).result_rows
    return reads.summary([r[0] for r in rows])


def timeline(ch: ClickHouseResource, dagster_home: Path, start: float, end: float) -> None:
    """Event-to-visible and ingestion by 10 s of event time, beside the runs that ran then (stderr)."""
    rows = ch.query(
        "SELECT toUnixTimestamp(toStartOfInterval(event_time, INTERVAL 10 SECOND)) AS t, count(), "
        "quantile(0.95)(dateDiff('millisecond', event_time, ingested_at)) / 1000.0 FROM events "
        "WHERE event_time >= fromUnixTimestamp64Milli({a:Int64}) AND event_time < fromUnixTimestamp64Milli({b:Int64}) "
        "GROUP BY t ORDER BY t",
        parameters={"a": int(start * 1000), "b": int(end * 1000)},
    ).result_rows
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        runs = [
            (r.start_time or 0.0, r.end_time or end, r.dagster_run.job_name)
            for r in instance.get_run_records(
                dg.RunsFilter(created_after=dt.datetime.fromtimestamp(start - 60, dt.UTC))
            )
        ]
    finally:
        instance.dispose()
    print("  timeline (10 s of event time): events, e2v P95, runs in progress", file=sys.stderr)
    for t, count, p95 in rows:
        during = sorted({name for s, e, name in runs if s < t + 10 and e > t and name != "kafka_ingestion"})
        print(f"    +{t - start:5.0f} s  {count:>7,}  {p95:6.2f} s  {' '.join(during)}", file=sys.stderr)


def cdc_timeline(ch: ClickHouseResource, start: float, end: float) -> list[tuple[float, int, float, float]]:
    """The changes by 10 s of arrival in ClickHouse, from a check window before `start` to `end`:
    (seconds from start, changes, lag P95, lag max). A failed `cdc_lag` check judges the 5 minutes
    before it, so a burst before the rung (a bulk write through CDC) shows here."""
    union = " UNION ALL ".join(
        f"SELECT ingested_at, dateDiff('millisecond', source_ts, ingested_at) / 1000.0 AS lag FROM {t} "
        "WHERE ingested_at >= fromUnixTimestamp64Milli({a:Int64}) AND ingested_at < fromUnixTimestamp64Milli({b:Int64})"
        for t in MIRRORS
    )
    rows = ch.query(
        "SELECT toUnixTimestamp(toStartOfInterval(ingested_at, INTERVAL 10 SECOND)) AS t, count(), "
        f"quantile(0.95)(lag), max(lag) FROM ({union}) GROUP BY t ORDER BY t",
        parameters={"a": int((start - CHECK_WINDOW_S) * 1000), "b": int(end * 1000)},
    ).result_rows
    lines = [(t - start, count, p95, top) for t, count, p95, top in rows]
    print("  CDC by 10 s of arrival (a cdc_lag check failed): changes, lag P95, lag max", file=sys.stderr)
    for at, count, p95, top in lines:
        print(f"    {at:+6.0f} s  {count:>7,}  {p95:6.2f} s  {top:6.2f} s", file=sys.stderr)
    return lines
