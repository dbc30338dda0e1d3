"""`feed_cache`: the most active users' feeds in Redis, refreshed on a schedule."""

from typing import TYPE_CHECKING

import dagster as dg

from nova_assets import settings
from nova_assets.core.cache import stats
from nova_assets.core.cache.warming import warm
from nova_assets.core.ports import RedisClient
from nova_assets.defs.recommendations.assets import feed_recommendations
from nova_assets.defs.tables import frame, table
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.resources.redis import RedisResource

if TYPE_CHECKING:  # pandas loads lazily: ~0.4 s of CPU at every run's start, for a few tables of metadata
    import pandas as pd

SCHEDULE = settings.CACHE_CRON
DEFAULT_CRON = "*/5 * * * *"


class FeedCacheConfig(dg.Config):
    """How many users to warm and for how long (TTL 300 s with jitter, as the guide's L2 cache)."""

    users: int = 10_000  # the N most active users (all interactions) are warmed
    active_days: int = 1  # activity window for picking them
    ttl_seconds: int = 300
    jitter_seconds: int = 30  # each key's TTL is ttl_seconds ± jitter_seconds, so they do not expire together
    chunk: int = 5_000  # SETs per Redis write


def hit_rate_by_minute(client: RedisClient, minutes: int = 60, now: float | None = None) -> "pd.DataFrame":
    """The read path's hits and misses per minute (from `nova serve`'s counters in Redis), minutes with reads only."""
    rows = []
    for minute, counters in stats.by_minute(client, minutes, now):
        hits, misses = stats.hits(counters), counters.get("misses", 0)
        if hits + misses:
            rows.append(
                {
                    "minute": stats.minute_label(minute),
                    "hits": hits,
                    "misses": misses,
                    "hit_rate": round(hits / (hits + misses), 4),
                }
            )
    return frame(rows, columns=["minute", "hits", "misses", "hit_rate"])


@dg.asset(
    name="feed_cache",
    group_name="cache",
    deps=[feed_recommendations],
    kinds={"redis"},
    description="Feeds of the most active users in Redis: one key per user (feed:{user_id}), TTL 300 s ± jitter.",
)
def feed_cache(
    context: dg.AssetExecutionContext, config: FeedCacheConfig, clickhouse: ClickHouseResource, redis: RedisResource
) -> dg.MaterializeResult:
    with clickhouse.batch_session() as client:  # yields the CPU to ingestion and reads
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
    by_minute = hit_rate_by_minute(redis.client())
    return dg.MaterializeResult(
        metadata={**figures, "hit_rate_last_hour": table(by_minute, {"minute": "UTC; minutes with reads only"})}
    )


feed_cache_schedule = dg.ScheduleDefinition(
    name="feed_cache_schedule",
    target=dg.AssetSelection.assets(feed_cache),
    cron_schedule=settings.env_str(SCHEDULE, DEFAULT_CRON),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Warm Redis with the most active users' feeds (NOVA_CACHE_CRON, default every 5 minutes).",
)
