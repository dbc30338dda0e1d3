"""Redis key layout: one key per user (hash-tagged for Redis Cluster), never globs.

`feed:{<user_id>}` holds the user's whole ranked feed as JSON; pages are sliced by the reader, so
one key serves every page and one UNLINK would drop them all (the guide's
`feed:{id}:{limit}:{offset}` keys could only be dropped with a glob, which DEL does not take).
"""

from __future__ import annotations

import time
import uuid

TRENDING = "trending"
STATS_PREFIX = "nova:feedstats:"
STATS_TTL_S = 86_400


def feed_key(user_id: uuid.UUID | str) -> str:
    return f"feed:{{{user_id}}}"


def trending_key() -> str:
    return feed_key(TRENDING)


def stats_key(minute: int | None = None) -> str:
    """Per-minute counters of the read path (hits, misses, fallbacks, latency buckets)."""
    minute = minute if minute is not None else int(time.time() // 60)
    return f"{STATS_PREFIX}{minute}"
