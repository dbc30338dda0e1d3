"""Freshness policies, set from each asset's cadence; applied once, where the definitions are assembled."""

import datetime as dt

import dagster as dg

from nova_assets.topics import APP_TABLES

#: ingestion runs start within seconds of new data; recommendations every 10 min; cache every 5 min
FRESHNESS: dict[str, dg.FreshnessPolicy] = {
    "events": dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=30), warn_window=dt.timedelta(minutes=10)
    ),
    **{
        mirror: dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(minutes=30))
        for mirror in APP_TABLES
    },
    "debezium_heartbeat": dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=5), warn_window=dt.timedelta(minutes=2)
    ),
    "feed_recommendations": dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=20), warn_window=dt.timedelta(minutes=15)
    ),
    "feed_cache": dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=10), warn_window=dt.timedelta(minutes=7)
    ),
}


def with_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The asset's freshness policy from FRESHNESS, if it has one (for `map_resolved_asset_specs`)."""
    policy = FRESHNESS.get(spec.key.to_user_string())
    return spec.replace_attributes(freshness_policy=policy) if policy is not None else spec
