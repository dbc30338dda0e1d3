"""Warming, deletes and the read path against a real three-node Redis Cluster."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis

from nova_assets.core.cache.keys import feed_key, stats_key, trending_key
from nova_assets.core.cache.warming import warm
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.resources import RedisResource
from nova_assets.serving import FeedService
from nova_assets_tests.redis_cluster import start_cluster
from nova_assets_tests.world import World


@pytest.fixture(scope="module")
def cluster_resource(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisResource]:
    nodes = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield RedisResource(url=f"redis://127.0.0.1:{nodes[0].port}/0", cluster=True)
    finally:
        for node in nodes:
            node.stop()


def test_warm_delete_and_read_across_cluster_nodes(world: World, cluster_resource: RedisResource) -> None:
    client = cluster_resource.client()
    assert isinstance(client, redis.cluster.RedisCluster)
    with world.ch.session() as ch:
        version = recompute(ch, ScoringParams(feed_size=10))["version"]
        figures = warm(ch, client, users=8)
    assert figures["users_warmed"] == 8 and figures["version"] == version
    # the keys really are spread over the masters, one key per user, TTL set
    owners = {client.get_node_from_key(feed_key(u)).port for u in world.users}
    assert len(owners) > 1
    for user in world.users:
        feed = orjson.loads(client.get(feed_key(user)))
        assert feed["user_id"] == str(user) and feed["version"] == version
        assert 270 <= client.ttl(feed_key(user)) <= 330
    assert client.exists(trending_key())

    service = FeedService(world.ch, client, stats_flush_s=0.1)
    try:
        pages = service.get_feeds(world.users, limit=3)  # one pipelined read across the nodes
        assert {p.source for p in pages.values()} == {"redis"}
        client.delete(feed_key(world.users[2]))
        service.l1.clear()
        again = service.get_feed(world.users[2])  # miss: ClickHouse, then written back to its node
        service.flush()
        assert again.source == "clickhouse" and client.exists(feed_key(world.users[2]))
        cold = service.get_feed(world.cold_user)  # no personal feed: the shared trending entry, no key of its own
        assert cold.source == "trending" and not client.exists(feed_key(world.cold_user))
    finally:
        service.close()
    minute = int(time.time() // 60)  # the counters are per minute: the reads may straddle two
    hits = sum(int(client.hget(stats_key(m), "hits_redis") or 0) for m in (minute - 1, minute))
    assert hits == len(world.users)

    # a deleted post stays in the cached feeds on whichever node holds them, and reads leave it out
    shown = {u: {p["post_id"] for p in orjson.loads(client.get(feed_key(u)))["posts"]} for u in world.users}
    post = next(p for p in shown[world.users[1]] if p not in shown[world.users[0]])
    readers = [u for u in world.users if post in shown[u]]
    ts = dt.datetime.now(dt.UTC)
    world.ch.insert(
        "posts", [[uuid.UUID(post), world.users[0], "x", ts, ts, 99, 1]],
        ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"],
    )  # fmt: skip
    reader = FeedService(world.ch, client, follow_deletions=False)
    try:
        pages = reader.get_feeds(readers, limit=10)
    finally:
        reader.close()
    assert all(client.exists(feed_key(u)) for u in readers)
    assert {p.source for p in pages.values()} == {"redis"}
    assert not any(post in {x["post_id"] for x in p.posts} for p in pages.values())
