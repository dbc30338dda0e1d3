"""The tables the ingestion runs fill, as assets of their own: their one writer is the ingestion run
(its materializations carry each run's rows and lag), their DDL is the schema's `ddl/<table>`."""

import dagster as dg

from nova_assets.core.schema.sql_files import load_objects
from nova_assets.defs.schema.assets import ddl_key
from nova_assets.defs.sources.assets import SOURCE_OF
from nova_assets.topics import INGESTED_TABLES

GROUP = "ingested"
_DESCRIPTIONS = {o.name: o.description for o in load_objects()}

ingested_tables = [
    dg.AssetSpec(
        key=name,
        group_name=GROUP,
        kinds={"clickhouse"},
        deps=[ddl_key(name), *([SOURCE_OF[name]] if name in SOURCE_OF else [])],
        description=(_DESCRIPTIONS.get(name) or f"ClickHouse table {name}") + " Written by the Kafka ingestion runs.",
        metadata={"sql_file": f"sql/clickhouse/ (object {name})"},
    )
    for name in INGESTED_TABLES
]
