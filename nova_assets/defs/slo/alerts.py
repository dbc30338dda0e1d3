"""`slo_alert_sensor`: failed ERROR checks and failed runs go to the log and, optionally, a webhook.

The webhook (NOVA_ALERT_WEBHOOK) receives one JSON object per alert; delivery is retried three
times with backoff and a failure to deliver is logged, never raised (the log is the sink of record).
"""

import time
import urllib.request
from typing import Any

import dagster as dg
import orjson
from tenacity import retry, stop_after_attempt, wait_exponential

from nova_assets import settings
from nova_assets.defs.instances import tick_instance

WEBHOOK = settings.ALERT_WEBHOOK


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def post_json(url: str, body: dict[str, Any], timeout_s: float = 5.0) -> int:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return int(response.status)


def _deliver(context: dg.SensorEvaluationContext, alert: dict[str, Any]) -> None:
    context.log.error(f"ALERT {alert['kind']}: {alert['summary']}")
    url = settings.env_str(WEBHOOK)
    if not url:
        return
    try:
        post_json(url, alert)
    except Exception as exc:  # the log above already has the alert
        context.log.warning(f"webhook {WEBHOOK} delivery failed: {exc}")


def _check_keys(context: dg.SensorEvaluationContext) -> list[dg.AssetCheckKey]:
    repository = context.repository_def
    if repository is None:  # evaluated outside a code location: nothing to look at
        return []
    return sorted(repository.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())


@dg.sensor(
    name="slo_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends failed ERROR-severity checks and failed runs to the log and NOVA_ALERT_WEBHOOK.",
)
def slo_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = orjson.loads(context.cursor) if context.cursor else {"checks": {}, "runs_after": time.time() - 300}
    seen: dict[str, int] = cursor.get("checks", {})
    sent = 0
    instance = tick_instance(context)
    for key in _check_keys(context):
        record = instance.get_latest_asset_check_evaluation_record(key)
        name = key.to_user_string()
        if record is None or record.id <= seen.get(name, 0):
            continue
        seen[name] = record.id
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is None or evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        metadata = {k: getattr(v, "value", str(v)) for k, v in evaluation.metadata.items()}
        _deliver(
            context,
            {
                "kind": "asset_check",
                "check": name,
                "asset": key.asset_key.to_user_string(),
                "severity": "ERROR",
                "summary": f"{name} failed: {evaluation.description}",
                "description": evaluation.description,
                "metadata": {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in metadata.items()},
                "run_id": record.run_id,
                "at": record.create_timestamp,
            },
        )
        sent += 1
    runs_after = float(cursor.get("runs_after", 0))
    newest = runs_after
    for run_record in instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=_dt(runs_after)), limit=50
    ):
        run = run_record.dagster_run
        newest = max(newest, run_record.update_timestamp.timestamp())
        _deliver(
            context,
            {
                "kind": "run_failure",
                "job": run.job_name,
                "run_id": run.run_id,
                "summary": f"run {run.run_id[:8]} of {run.job_name} failed",
                "tags": dict(run.tags),
                "at": run_record.update_timestamp.timestamp(),
            },
        )
        sent += 1
    new_cursor = orjson.dumps({"checks": seen, "runs_after": newest}).decode()
    if not sent:
        return dg.SensorResult(skip_reason="no new failures", cursor=new_cursor)
    return dg.SensorResult(skip_reason=f"sent {sent} alert(s)", cursor=new_cursor)


def _dt(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)
