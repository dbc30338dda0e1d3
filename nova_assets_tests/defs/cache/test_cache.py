from __future__ import annotations

import dagster as dg
import orjson
import pytest

from nova_assets.core.cache.keys import feed_key, trending_key
from nova_assets.core.cache.warming import warm
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.defs.cache.assets import feed_cache
from nova_assets.resources import RedisResource
from nova_assets_tests.world import EVENT_COLUMNS, World


def test_feed_cache_warms_active_users_with_ttl(world: World, redis_resource: RedisResource) -> None:
    with world.ch.session() as client:
        version = recompute(client, ScoringParams(feed_size=10))["version"]
    result = dg.materialize(
        [feed_cache],
        resources={"clickhouse": world.ch, "redis": redis_resource},
        run_config={"ops": {"feed_cache": {"config": {"users": 5, "chunk": 2}}}},
    )
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("feed_cache")[0].metadata.items()}
    by_minute = meta["hit_rate_last_hour"]
    assert [c.name for c in by_minute.schema.columns] == ["minute", "hits", "misses", "hit_rate"]
    assert meta["users_warmed"] == 5 and meta["keys"] == 6 and meta["version"] == version and meta["bytes"] > 0
    r = redis_resource.client()
    warmed = [u for u in world.users if r.exists(feed_key(u))]
    assert len(warmed) == 5
    for user in warmed:
        assert 270 <= r.ttl(feed_key(user)) <= 330
        feed = orjson.loads(r.get(feed_key(user)))
        assert feed["user_id"] == str(user) and feed["version"] == version
        assert [p["rank"] for p in feed["posts"]] == list(range(1, len(feed["posts"]) + 1))
    assert orjson.loads(r.get(trending_key()))["source"] == "trending"
    assert feed_key(world.users[0]) == f"feed:{{{world.users[0]}}}"  # Redis Cluster hash tag


def test_active_user_without_a_personal_feed_is_warmed_with_trending(
    world: World, redis_resource: RedisResource
) -> None:
    with world.ch.session() as client:
        version = recompute(client, ScoringParams(feed_size=10))["version"]
    # the cold user becomes the most active user after the recompute: no personal feed yet
    post = world.posts[world.authors[1]][1]
    world.ch.insert(
        "events", [world.event(world.cold_user, world.authors[1], post, "like", 0.1) for _ in range(200)], EVENT_COLUMNS
    )
    r = redis_resource.client()
    with world.ch.session() as client:
        figures = warm(client, r, users=9)
    assert figures["users_warmed"] == 9
    cached = orjson.loads(r.get(feed_key(world.cold_user)))
    trending = orjson.loads(r.get(trending_key()))
    assert cached["source"] == "trending" and cached["version"] == version
    assert cached["posts"] == trending["posts"] and cached["posts"]
    assert orjson.loads(r.get(feed_key(world.users[0])))["source"] == "personal"


def test_set_many_reports_refused_writes_and_keeps_the_connection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Redis that refuses writes (out of memory, no eviction) is an error with a count, not silence."""
    import redis as redis_lib

    from nova_assets.core.cache.warming import set_many
    from nova_assets.core.process import free_port
    from nova_assets.stack.services import RedisService

    service = RedisService(tmp_path, free_port())
    service.start_and_wait()
    try:
        r = RedisResource(url=service.url()).client()
        set_many(r, [(b"k%d" % i, b"v" * 100, 60) for i in range(50)])
        assert r.get(b"k49") == b"v" * 100 and 50 <= r.ttl(b"k49") <= 60
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", str(int(r.info("memory")["used_memory"]) + 200_000))
        with pytest.raises(redis_lib.ResponseError, match=r"\d+ of 40 SETs failed; first: .*maxmemory"):
            set_many(r, [(b"big%d" % i, b"x" * 50_000, 60) for i in range(40)])
        assert r.ping() and r.get(b"k0") == b"v" * 100  # the pooled connection is still in step
    finally:
        service.stop()


def test_hit_rate_by_minute_reads_the_read_paths_counters(redis_resource: RedisResource) -> None:
    from nova_assets.core.cache.keys import stats_key
    from nova_assets.defs.cache.assets import hit_rate_by_minute

    r = redis_resource.client()
    now = 1_800_000_000.0
    minute = int(now // 60)
    r.hset(stats_key(minute - 2), mapping={"hits_l1": 90, "hits_redis": 5, "misses": 5})
    r.hset(stats_key(minute), mapping={"misses": 4})
    r.hset(stats_key(minute - 61), mapping={"hits_l1": 1})  # older than an hour
    frame = hit_rate_by_minute(r, now=now)
    assert frame.to_dict("records") == [
        {"minute": "2027-01-15 07:58", "hits": 95, "misses": 5, "hit_rate": 0.95},
        {"minute": "2027-01-15 08:00", "hits": 0, "misses": 4, "hit_rate": 0.0},
    ]


def test_a_delete_keeps_every_cached_feed_and_reads_leave_the_post_out(
    world: World, redis_resource: RedisResource
) -> None:
    """A post CDC deletes stays in the cached feeds that show it (no UNLINK: each one would turn the
    next read into a ClickHouse miss), and every read leaves it out: the delete reaches
    post_deletions with the mirror's insert, and readers poll that."""
    import datetime as dt

    from nova_assets.serving import FeedService

    with world.ch.session() as client:
        version = recompute(client, ScoringParams(feed_size=10))["version"]
        warm(client, redis_resource.client(), users=100)
        post, author = client.query(
            "SELECT post_id, any(author_id) FROM feed_recommendations WHERE version = {v:UInt64} "
            "AND user_id != toUUID('00000000-0000-0000-0000-000000000000') "
            "GROUP BY post_id ORDER BY count() DESC LIMIT 1",
            parameters={"v": version},
        ).result_rows[0]
        readers = [
            str(u[0])
            for u in client.query(
                "SELECT DISTINCT user_id FROM feed_recommendations WHERE version = {v:UInt64} AND post_id = {p:UUID} "
                "AND user_id != toUUID('00000000-0000-0000-0000-000000000000')",
                parameters={"v": version, "p": post},
            ).result_rows
        ]
    r = redis_resource.client()
    assert readers and all(r.exists(feed_key(u)) for u in readers)
    ts = dt.datetime.now(dt.UTC)
    world.ch.insert(
        "posts", [[post, author, "x", ts, ts, 99, 1]],
        ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"],
    )  # fmt: skip
    assert all(r.exists(feed_key(u)) for u in readers), "a cached feed was dropped for a delete"
    service = FeedService(world.ch, r, follow_deletions=False)  # a reader started after the delete
    try:
        pages = service.get_feeds(readers, limit=10)
    finally:
        service.close()
    assert {p.source for p in pages.values()} == {"redis"}
    assert not any(str(post) in {x["post_id"] for x in p.posts} for p in pages.values())
    assert all(p.total == 9 for p in pages.values())  # ranks keep their numbers; the page is one shorter
