"""Warming Redis with the feeds of the most active users, and invalidating followers' feeds."""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
import redis
from clickhouse_connect.driver.client import Client

from nova_assets.defs.cache.keys import feed_key, trending_key
from nova_assets.defs.recommendations.scoring import NIL_USER, latest_version

ACTIVE_USERS = """
SELECT user_id
FROM user_author_daily
WHERE day >= today() - {days:UInt16}
GROUP BY user_id
ORDER BY sum(views + clicks + likes + comments + shares) DESC, user_id
LIMIT {n:UInt32}
"""

# The cached value's `posts` array is built by ClickHouse itself (no per-post Python work).
FEEDS_JSON_FOR = """
SELECT user_id, toJSONString(groupArray(CAST(
    tuple(rank, toString(post_id), toString(author_id), round(score, 6), toString(reason)),
    'Tuple(rank UInt16, post_id String, author_id String, score Float64, reason String)')))
FROM
(
    SELECT user_id, rank, post_id, author_id, score, reason
    FROM feed_recommendations
    WHERE version = {version:UInt64} AND user_id IN {users:Array(UUID)}
    ORDER BY user_id, rank
)
GROUP BY user_id
"""


def feed_value(user_id: uuid.UUID | str, version: int, posts_json: str, source: str) -> bytes:
    """The cached value, from a posts array already encoded as JSON by ClickHouse."""
    head = orjson.dumps({"user_id": str(user_id), "version": version, "source": source})
    return head[:-1] + b',"posts":' + posts_json.encode() + b"}"


def fetch_feeds_json(client: Client, version: int, users: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each user's ranked posts as a JSON array, in one query (array parameter, never an IN-list)."""
    if not users:
        return {}
    rows = client.query(FEEDS_JSON_FOR, parameters={"version": version, "users": users}).result_rows
    return dict(rows)


def warm(
    client: Client,
    cache: redis.Redis,
    users: int = 10_000,
    active_days: int = 1,
    ttl_s: int = 300,
    jitter_s: int = 30,
    chunk: int = 1_000,
) -> dict[str, Any]:
    """Write the feeds of the `users` most active users (plus trending), pipelined in chunks."""
    started = time.perf_counter()
    version = latest_version(client)
    if version is None:
        return {"users_warmed": 0, "keys": 0, "bytes": 0, "feeds_per_s": 0.0, "version": 0, "skipped": "no version"}
    active = [r[0] for r in client.query(ACTIVE_USERS, parameters={"days": active_days, "n": users}).result_rows]
    rng = random.Random()
    trending = fetch_feeds_json(client, version, [NIL_USER]).get(NIL_USER, "[]")
    keys = bytes_written = warmed = 0
    trending_value = feed_value("trending", version, trending, "trending")
    cache.set(trending_key(), trending_value, ex=ttl_s + jitter_s)  # the cold-start list outlives user feeds
    keys, bytes_written = 1, len(trending_value)
    # Chunks follow the table's sort key (user_id), so each query reads contiguous granules, and
    # one writer thread sends chunk n to Redis while ClickHouse builds chunk n+1.
    active.sort()
    pending: queue.Queue[tuple[list[uuid.UUID], dict[uuid.UUID, str]] | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal bytes_written
        while (item := pending.get()) is not None:
            if failure:
                continue
            part, feeds = item
            try:
                pipe = cache.pipeline(transaction=False)
                for user in part:
                    posts = feeds.get(user)
                    value = feed_value(user, version, posts, "personal") if posts else trending_value
                    pipe.set(feed_key(user), value, ex=ttl_s + rng.randint(-jitter_s, jitter_s))
                    bytes_written += len(value)
                pipe.execute()
            except BaseException as exc:  # re-raised by the caller below
                failure.append(exc)

    thread = threading.Thread(target=writer, name="feed-cache-writer", daemon=True)
    thread.start()
    try:
        for start in range(0, len(active), chunk):
            if failure:
                break
            part = active[start : start + chunk]
            pending.put((part, fetch_feeds_json(client, version, part)))
            keys += len(part)
            warmed += len(part)
    finally:
        pending.put(None)
        thread.join()
    if failure:
        raise failure[0]
    elapsed = time.perf_counter() - started
    return {
        "users_warmed": warmed,
        "keys": keys,
        "bytes": bytes_written,
        "feeds_per_s": round(warmed / elapsed, 1) if elapsed else 0.0,
        "version": version,
        "runtime_s": round(elapsed, 3),
    }


FOLLOWERS = """
SELECT followee_id, groupArray({max_fanout:UInt32})(follower_id)
FROM (SELECT follower_id, followee_id FROM follows FINAL WHERE followee_id IN {authors:Array(UUID)})
GROUP BY followee_id
"""


def invalidate_followers(
    client: Client, cache: redis.Redis, authors: Iterable[uuid.UUID | str], max_fanout: int = 10_000, chunk: int = 1_000
) -> int:
    """UNLINK the cached feeds of the followers of `authors` (bounded per author); returns keys dropped."""
    authors = list({str(a) for a in authors})
    if not authors:
        return 0
    rows = client.query(FOLLOWERS, parameters={"authors": authors, "max_fanout": max_fanout}).result_rows
    followers = [f for _author, group in rows for f in group]
    dropped = 0
    for start in range(0, len(followers), chunk):
        pipe = cache.pipeline(transaction=False)
        for follower in followers[start : start + chunk]:
            pipe.unlink(feed_key(follower))
        dropped += sum(int(n) for n in pipe.execute())
    return dropped
