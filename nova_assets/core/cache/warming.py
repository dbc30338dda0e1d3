"""Warming Redis with the feeds of the most active users (a post deleted later is left out when a
feed is read: see `deletions`)."""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster
from clickhouse_connect.driver.client import Client

from nova_assets.core.cache.keys import feed_key, trending_key
from nova_assets.core.recommendations.scoring import NIL_USER, latest_version, query_text

ACTIVE_USERS = query_text("active_users")
FEED_POSTS = query_text("feed_posts")
# the read path: the users of an array parameter (never a formatted IN-list)
FEEDS_FOR = "WITH {users:Array(UUID)} AS wanted\n" + FEED_POSTS
# warming: every active user, with an empty posts array where there is no personal feed; one
# streamed query (the active users computed in ClickHouse), not one query per chunk of an
# array parameter, which spent more on parsing the array than on building the feeds
ACTIVE_FEEDS = (
    f"WITH wanted AS ({ACTIVE_USERS})\n"
    f"SELECT w.user_id AS user_id, f.posts AS posts FROM ({FEED_POSTS}) AS f\n"
    "RIGHT JOIN wanted AS w ON f.user_id = w.user_id"
)
SET_COMMAND = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$%d\r\n%s\r\n"


def feed_value(user_id: uuid.UUID | str, version: int, posts_json: bytes, source: str) -> bytes:
    """The cached value, around a posts array already encoded as JSON by ClickHouse."""
    return b'{"user_id":"%s","version":%d,"source":"%s","posts":%s}' % (
        str(user_id).encode(),
        version,
        source.encode(),
        posts_json,
    )


def fetch_feeds_json(client: Client, version: int, users: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
    """Each user's ranked posts as a JSON array, in one query (array parameter, never an IN-list)."""
    if not users:
        return {}
    result = client.query(FEEDS_FOR, parameters={"version": version, "users": users}, query_formats={"String": "bytes"})
    return {row[0]: row[1] for row in result.result_rows}


def set_many(cache: redis.Redis | redis.cluster.RedisCluster, items: Sequence[tuple[bytes, bytes, int]]) -> None:
    """SET key value EX ttl for many keys in one round trip.

    On a single node the commands are framed here and written as one buffer on a pooled
    connection: redis-py's pipeline spends ~12 µs packing each SET, more than Redis spends
    storing it, and that was the warm rate's ceiling. RESP framing of SET is three lines of
    the protocol spec. A Redis Cluster client routes by slot, so it keeps the pipeline.
    """
    if not items:
        return
    if isinstance(cache, redis.cluster.RedisCluster):
        pipe = cache.pipeline(transaction=False)
        for key, value, ttl in items:
            pipe.set(key, value, ex=ttl)
        pipe.execute()
        return
    frames = []
    for key, value, ttl in items:
        seconds = b"%d" % ttl
        frames.append(SET_COMMAND % (len(key), key, len(value), value, len(seconds), seconds))
    pool = cache.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(frames)])
        errors = []
        for _ in items:  # read every reply, so the connection goes back to the pool in step
            try:
                conn.read_response(disconnect_on_error=False)
            except redis.ResponseError as exc:
                errors.append(exc)
        if errors:
            raise redis.ResponseError(f"{len(errors)} of {len(items)} SETs failed; first: {errors[0]}")
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def warm(
    client: Client,
    cache: redis.Redis | redis.cluster.RedisCluster,
    users: int = 10_000,
    active_days: int = 1,
    ttl_s: int = 300,
    jitter_s: int = 30,
    chunk: int = 5_000,
) -> dict[str, Any]:
    """Write the feeds of the `users` most active users (plus trending) as ClickHouse streams them,
    `chunk` SETs per Redis write."""
    started = time.perf_counter()
    version = latest_version(client)
    if version is None:
        return {"users_warmed": 0, "keys": 0, "bytes": 0, "feeds_per_s": 0.0, "version": 0, "skipped": "no version"}
    rng = random.Random()
    trending = fetch_feeds_json(client, version, [NIL_USER]).get(NIL_USER, b"[]")
    trending_value = feed_value("trending", version, trending, "trending")
    cache.set(trending_key(), trending_value, ex=ttl_s + jitter_s)  # the cold-start list outlives user feeds
    bytes_written, warmed = len(trending_value), 0
    # ClickHouse streams blocks of (user_id, posts) while one writer thread sends the previous
    # block to Redis in chunks of `chunk` SETs.
    pending: queue.Queue[Sequence[Sequence[Any]] | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal bytes_written
        while (block := pending.get()) is not None:
            if failure:
                continue
            try:
                for start in range(0, len(block), chunk):
                    batch = []
                    for user, posts in block[start : start + chunk]:
                        value = feed_value(user, version, posts, "personal") if posts else trending_value
                        batch.append((feed_key(user).encode(), value, ttl_s + rng.randint(-jitter_s, jitter_s)))
                        bytes_written += len(value)
                    set_many(cache, batch)
            except BaseException as exc:  # re-raised by the caller below
                failure.append(exc)

    thread = threading.Thread(target=writer, name="feed-cache-writer", daemon=True)
    thread.start()
    try:
        params = {"version": version, "days": active_days, "n": users}
        with client.query_row_block_stream(ACTIVE_FEEDS, parameters=params, query_formats={"String": "bytes"}) as rows:
            for block in rows:
                if failure:
                    break
                pending.put(block)
                warmed += len(block)
    finally:
        pending.put(None)
        thread.join()
    if failure:
        raise failure[0]
    elapsed = time.perf_counter() - started
    return {
        "users_warmed": warmed,
        "keys": warmed + 1,  # one per user, plus trending
        "bytes": bytes_written,
        "feeds_per_s": round(warmed / elapsed, 1) if elapsed else 0.0,
        "version": version,
        "runtime_s": round(elapsed, 3),
    }
