"""Query helpers for the guide's access patterns; every value is a bound parameter."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from nova_assets.core.ports import ClickHouse

USER_TIMELINE = """
SELECT event_time, action, post_id, author_id, dwell_ms
FROM events
PREWHERE user_id = {user_id:UUID}
WHERE event_time >= {since:DateTime64(3, 'UTC')}
ORDER BY event_time DESC
LIMIT {limit:UInt32}
"""

POST_ENGAGEMENT = """
SELECT
    post_id,
    sum(views) AS views,
    sum(clicks) AS clicks,
    sum(likes) AS likes,
    sum(comments) AS comments,
    sum(shares) AS shares
FROM post_metrics_1h
WHERE post_id IN {post_ids:Array(UUID)}
  AND window_start >= toStartOfHour(now() - toIntervalHour({hours:UInt32}))
GROUP BY post_id
"""

USER_AFFINITY = """
SELECT author_id, total_views, total_clicks, total_likes, total_comments, total_shares, total_dwell_ms,
       last_interaction
FROM user_author_90d
WHERE user_id = {user_id:UUID}
ORDER BY total_likes + total_comments + total_shares + total_clicks DESC, total_views DESC
LIMIT {limit:UInt32}
"""


def user_timeline(
    clickhouse: ClickHouse, user_id: uuid.UUID | str, since: dt.datetime, limit: int = 100
) -> list[tuple[Any, ...]]:
    """A user's recent events, newest first (the sorting key starts with user_id, event_time)."""
    params = {"user_id": str(user_id), "since": since, "limit": limit}
    return [tuple(row) for row in clickhouse.query(USER_TIMELINE, parameters=params).result_rows]


def post_engagement(
    clickhouse: ClickHouse, post_ids: Sequence[uuid.UUID | str], hours: int = 24
) -> dict[uuid.UUID, dict[str, int]]:
    """Engagement of posts over the last `hours` hours, from the hourly rollup."""
    if not post_ids:
        return {}
    params = {"post_ids": [str(p) for p in post_ids], "hours": hours}
    result = clickhouse.query(POST_ENGAGEMENT, parameters=params)
    names = result.column_names[1:]
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in result.result_rows}


def user_affinity(clickhouse: ClickHouse, user_id: uuid.UUID | str, limit: int = 50) -> list[tuple[Any, ...]]:
    """The authors a user engaged with most over the last 90 days."""
    rows = clickhouse.query(USER_AFFINITY, parameters={"user_id": str(user_id), "limit": limit}).result_rows
    return [tuple(row) for row in rows]
