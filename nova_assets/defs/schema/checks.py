"""Drift detection: every object's live definition must match `sql/clickhouse/`, or the check is ERROR.

Nothing is dropped or recreated automatically: the check says what differs and a person decides
(usually by adding a forward migration).
"""

from collections.abc import Iterator

import dagster as dg

from nova_assets.core.schema.ddl import describe, diff, expected_descriptions
from nova_assets.core.schema.sql_files import load_objects
from nova_assets.defs.schema.assets import ddl_key, renderer_for
from nova_assets.resources.clickhouse import ClickHouseResource

CHECK_NAME = "matches_sql"

_specs = [
    dg.AssetCheckSpec(
        name=CHECK_NAME,
        asset=ddl_key(obj.name),
        description=f"Live {obj.kind} equals {obj.path.name} plus its migrations (columns, engine, keys, TTL).",
    )
    for obj in load_objects()
]


@dg.multi_asset_check(specs=_specs, can_subset=True, name="clickhouse_schema_drift")
def schema_drift_checks(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource
) -> Iterator[dg.AssetCheckResult]:
    selected = {key.asset_key.path[-1] for key in context.selected_asset_check_keys}
    objects = [obj for obj in load_objects() if obj.name in selected]
    renderer = renderer_for(clickhouse)
    with clickhouse.session() as client:
        expected = expected_descriptions(client, clickhouse.database, objects)
        for obj in objects:
            stored = renderer.local_name(obj.name) if obj.is_table else obj.name
            live = describe(client, clickhouse.database, stored, cluster=bool(clickhouse.cluster))
            differences = diff(expected[obj.name], live)
            yield dg.AssetCheckResult(
                asset_key=ddl_key(obj.name),
                check_name=CHECK_NAME,
                passed=not differences,
                severity=dg.AssetCheckSeverity.ERROR,
                description="matches sql/" if not differences else f"{len(differences)} difference(s) from sql/",
                metadata={
                    "sql_file": obj.path.name,
                    "diff": dg.MetadataValue.md(
                        "```diff\n" + "\n".join(differences) + "\n```" if differences else "no differences"
                    ),
                    "differences": len(differences),
                },
            )
