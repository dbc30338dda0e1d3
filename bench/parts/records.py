"""What a benchmark's Dagster instance recorded: check evaluations that failed, runs that failed,
the batch schedules' runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from bench.parts.batch import SHIPPED, BatchRun


def check_evaluations(dagster_home: Path, since: float) -> tuple[int, list[tuple[float, str, str]]]:
    """Evaluations recorded after `since`, and (when, "asset/check (severity)", what it measured) of
    those that failed: a failed rung says which evaluation failed on what, not only a count."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        events = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_timestamp=since),
            limit=1_000_000,
        )
    failed = []
    for record in events:
        e = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        if not e.passed:
            name = f"{e.asset_key.to_user_string()}/{e.check_name} ({e.severity.value})"
            failed.append((record.timestamp, name, e.description or ""))
    return len(events), failed


def failed_runs(dagster_home: Path, since: float) -> list[str]:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        return [r.dagster_run.job_name for r in records if (r.create_timestamp.timestamp() >= since)]


def batch_runs(dagster_home: Path, since: float, until: float) -> list[BatchRun]:
    """The batch schedules' runs that overlap [since, until] (a run still going ends at `until`)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records(
            dg.RunsFilter(created_after=dt.datetime.fromtimestamp(since - 3_600, dt.UTC))
        )
    out = []
    for r in records:
        name = r.dagster_run.tags.get("dagster/schedule_name", "")
        end = r.end_time or until
        if name in SHIPPED and r.create_timestamp.timestamp() < until and end > since:
            out.append(BatchRun(name, r.create_timestamp.timestamp(), end))
    return sorted(out, key=lambda b: b.start)
