import dagster as dg

from nova_assets import definitions


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(definitions.defs)


def test_one_resource_per_external_system() -> None:
    resources = definitions.defs.resources or {}
    assert set(resources) >= {"clickhouse", "kafka", "redis", "postgres"}
