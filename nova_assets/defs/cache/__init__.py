"""Redis feed cache: warming schedule, key layout, invalidation of the feeds that show a deleted post."""

import dagster as dg

from nova_assets.defs.cache.assets import feed_cache, feed_cache_schedule

defs = dg.Definitions(assets=[feed_cache], schedules=[feed_cache_schedule])
