"""Freshness policies, set from each asset's cadence."""

import datetime as dt

import dagster as dg

#: ingestion runs start within seconds of new data; recommendations every 10 min; cache every 5 min
FRESHNESS: dict[str, dg.FreshnessPolicy] = {
    "events": dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=30), warn_window=dt.timedelta(minutes=10)
    ),
    **{
        mirror: dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(minutes=30))
        for mirror in ("users", "posts", "likes", "comments", "follows")
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
