"""The one Definitions root: every capability under `defs/` merged with the project's resources."""

from __future__ import annotations

import warnings

import dagster as dg

from nova_assets import settings
from nova_assets.defs import cache, ingestion, recommendations, schema, slo, sources
from nova_assets.defs.slo.freshness import with_freshness
from nova_assets.resources import ClickHouseResource, KafkaResource, PostgresResource, RedisResource


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """One resource per external system, configured from NOVA_* environment variables at run time."""
    return {
        "clickhouse": ClickHouseResource.from_env(dg.EnvVar(settings.CLICKHOUSE_URL)),
        "kafka": KafkaResource(bootstrap_servers=dg.EnvVar(settings.KAFKA_BOOTSTRAP)),
        "redis": RedisResource(
            url=dg.EnvVar(settings.REDIS_URL),
            cluster=settings.env_bool(settings.REDIS_CLUSTER),
        ),
        "postgres": PostgresResource(dsn=dg.EnvVar(settings.POSTGRES_DSN)),
    }


def build_defs() -> dg.Definitions:
    """Every capability merged with the resources, then the SLO's freshness policies applied in one
    place (one Definitions at module scope: a code location refuses two)."""
    merged = dg.Definitions.merge(
        sources.defs,
        schema.defs,
        ingestion.defs,
        recommendations.defs,
        cache.defs,
        slo.defs,
        # Every run executes its steps in the run's own process: the work is in ClickHouse, Kafka and
        # Redis, and a Python subprocess per step would cost seconds of CPU on every scheduled run.
        dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
    )
    with warnings.catch_warnings():  # Dagster 1.13 marks map_resolved_asset_specs as preview
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return merged.map_resolved_asset_specs(func=with_freshness)


defs = build_defs()
