"""ClickHouse schema: one asset per object in sql/clickhouse/, drift checks, the apply job."""

import dagster as dg

from nova_assets.defs.schema.assets import apply_schema_job, schema_assets
from nova_assets.defs.schema.checks import schema_drift_checks

defs = dg.Definitions(assets=schema_assets, asset_checks=[schema_drift_checks], jobs=[apply_schema_job])
