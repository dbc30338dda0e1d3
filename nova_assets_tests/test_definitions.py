import dagster as dg
import pytest

from nova_assets import definitions
from nova_assets.errors import ConfigError


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(definitions.defs)


def test_one_resource_per_external_system() -> None:
    resources = definitions.defs.resources or {}
    assert set(resources) >= {"clickhouse", "kafka", "redis", "postgres"}


def test_redis_cluster_flag_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "yes")
    assert definitions.build_resources()["redis"].cluster is True  # type: ignore[attr-defined]
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "0")
    assert definitions.build_resources()["redis"].cluster is False  # type: ignore[attr-defined]
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "maybe")
    with pytest.raises(ConfigError, match="NOVA_REDIS_CLUSTER='maybe'"):
        definitions.build_resources()
