"""`feed_cache`: the most active users' feeds in Redis, refreshed on a schedule."""

import os

import dagster as dg

from nova_assets.defs.cache.warming import warm
from nova_assets.defs.recommendations.assets import feed_recommendations
from nova_assets.defs.slo.freshness import FRESHNESS
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.resources.redis import RedisResource

SCHEDULE = "NOVA_CACHE_CRON"
DEFAULT_CRON = "*/5 * * * *"


class FeedCacheConfig(dg.Config):
    """How many users to warm and for how long (TTL 300 s with jitter, as the guide's L2 cache)."""

    users: int = 10_000  # the N most active users (all interactions) are warmed
    active_days: int = 1  # activity window for picking them
    ttl_seconds: int = 300
    jitter_seconds: int = 30  # each key's TTL is ttl_seconds ± jitter_seconds, so they do not expire together
    chunk: int = 5_000  # SETs per Redis write


@dg.asset(
    name="feed_cache",
    freshness_policy=FRESHNESS["feed_cache"],
    group_name="cache",
    deps=[feed_recommendations],
    kinds={"redis"},
    description="Feeds of the most active users in Redis: one key per user (feed:{user_id}), TTL 300 s ± jitter.",
)
def feed_cache(
    context: dg.AssetExecutionContext, config: FeedCacheConfig, clickhouse: ClickHouseResource, redis: RedisResource
) -> dg.MaterializeResult:
    with clickhouse.session() as client:
        figures = warm(
            client,
            redis.client(),
            users=config.users,
            active_days=config.active_days,
            ttl_s=config.ttl_seconds,
            jitter_s=config.jitter_seconds,
            chunk=config.chunk,
        )
    context.log.info(f"warmed {figures}")
    return dg.MaterializeResult(metadata=figures)


feed_cache_schedule = dg.ScheduleDefinition(
    name="feed_cache_schedule",
    target=dg.AssetSelection.assets(feed_cache),
    cron_schedule=os.environ.get(SCHEDULE, DEFAULT_CRON),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Warm Redis with the most active users' feeds (NOVA_CACHE_CRON, default every 5 minutes).",
)
