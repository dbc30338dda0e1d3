"""The SLO checks job, its one-minute schedule and the alert sensor, as one Definitions."""

import dagster as dg

from nova_assets import settings
from nova_assets.defs.slo.alerts import slo_alert_sensor
from nova_assets.defs.slo.checks import slo_checks

slo_checks_job = dg.define_asset_job(
    "slo_checks",
    selection=dg.AssetSelection.checks(*slo_checks),
    description="Every SLO and data-quality check (cheap queries over the last minutes).",
)

SCHEDULE = settings.SLO_CRON

slo_checks_schedule = dg.ScheduleDefinition(
    name="slo_checks_every_minute",
    target=slo_checks_job,
    cron_schedule=settings.env_str(SCHEDULE, "* * * * *"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    tags={"dagster/priority": "10"},  # dequeued ahead of anything else waiting
)

defs = dg.Definitions(
    asset_checks=slo_checks, jobs=[slo_checks_job], schedules=[slo_checks_schedule], sensors=[slo_alert_sensor]
)
