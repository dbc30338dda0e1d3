"""Redis feed cache: the warming schedule (a post deleted later is left out when a feed is read)."""

import dagster as dg

from nova_assets.defs.cache.assets import feed_cache, feed_cache_schedule

defs = dg.Definitions(assets=[feed_cache], schedules=[feed_cache_schedule])
