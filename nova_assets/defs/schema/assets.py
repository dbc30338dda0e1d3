"""One Dagster asset per ClickHouse object in `sql/clickhouse/`; materializing applies its DDL."""

import dagster as dg

from nova_assets.core.schema.ddl import apply_object
from nova_assets.core.schema.sql_files import Renderer, SqlObject, load_objects
from nova_assets.defs.sources.assets import SOURCE_OF
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.topics import INGESTED_TABLES

GROUP = "clickhouse_schema"


def renderer_for(clickhouse: ClickHouseResource) -> Renderer:
    return Renderer(clickhouse.database, clickhouse.cluster)


def ddl_key(name: str) -> dg.AssetKey:
    """The asset that applies an object's DDL. A table the ingestion runs fill has its own asset for
    the data (`defs/ingestion/assets.py`), so each asset has one writer: re-applying the schema does
    not make `events` look fresh."""
    return dg.AssetKey(["ddl", name]) if name in INGESTED_TABLES else dg.AssetKey(name)


def _build(obj: SqlObject) -> dg.AssetsDefinition:
    ingested = obj.name in INGESTED_TABLES

    @dg.asset(
        key=ddl_key(obj.name),
        group_name=GROUP,
        deps=[dg.AssetKey(dep) for dep in obj.depends]
        + ([SOURCE_OF[obj.name]] if obj.name in SOURCE_OF and not ingested else []),
        description=(f"The DDL of `{obj.name}` (the ingestion runs write its data). " if ingested else "")
        + (obj.description or f"ClickHouse {obj.kind} {obj.name}"),
        kinds={"clickhouse", "sql"},
        tags={"nova/object_kind": obj.kind, **({"nova/role": obj.role} if obj.role else {})},
        metadata={"sql_file": str(obj.path.relative_to(obj.path.parents[2]))},
    )
    def _asset(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource) -> dg.MaterializeResult:
        renderer = renderer_for(clickhouse)
        with clickhouse.ddl_session() as client:
            result = apply_object(client, obj, renderer)
            metadata: dict[str, dg.RawMetadataValue] = {
                "ddl": dg.MetadataValue.md("```sql\n" + ";\n\n".join(result.statements) + ";\n```"),
                "created": result.created,
                "migrations_applied": result.migrations,
                "cluster": clickhouse.cluster or "(single node)",
            }
            if obj.is_table:
                rows = client.query(f"SELECT count() FROM {obj.name}").result_rows[0][0]
                metadata["dagster/row_count"] = int(rows)
        context.log.info(f"{obj.name}: {'created' if result.created else 'already present'}")
        return dg.MaterializeResult(metadata=metadata)

    return _asset


# Objects owned by another capability (`-- asset: <domain>`) get their asset there, which also
# applies their DDL before filling them.
schema_assets = [_build(obj) for obj in load_objects() if not obj.owner]

apply_schema_job = dg.define_asset_job(
    "apply_clickhouse_schema",
    selection=dg.AssetSelection.groups(GROUP),
    description="Create every ClickHouse object that is missing and run pending forward migrations.",
)
