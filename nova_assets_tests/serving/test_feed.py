from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest

from nova_assets.core.cache.keys import feed_key, stats_key
from nova_assets.core.process import free_port
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.resources import ClickHouseResource, RedisResource
from nova_assets.serving import FeedService, InvalidRequest
from nova_assets.serving.http import serve_in_thread
from nova_assets_tests.world import World


@pytest.fixture
def service(world: World, redis_resource: RedisResource):  # type: ignore[no-untyped-def]
    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=30))
    svc = FeedService(world.ch, redis_resource.client(), breaker_fail_max=2, breaker_reset_s=1.0, stats_flush_s=0.1)
    yield svc
    svc.close()


def test_tiers_l1_redis_clickhouse_and_trending(service: FeedService, world: World) -> None:
    user = world.users[0]
    first = service.get_feed(user, limit=5)
    assert first.source == "clickhouse" and len(first.posts) == 5 and first.total == 18  # 6 authors x k=3
    assert service.get_feed(user, limit=5).source == "l1"
    service.flush()
    service.l1.clear()
    second = service.get_feed(str(user), limit=5, offset=5)
    assert second.source == "redis"
    assert [p["rank"] for p in second.posts] == [6, 7, 8, 9, 10]
    cold = service.get_feed(world.cold_user)
    assert cold.source == "trending" and cold.posts and cold.posts[0]["rank"] == 1


def test_a_post_deleted_after_the_recompute_is_not_served(service: FeedService, world: World) -> None:
    """The recompute leaves out deleted posts; one deleted later is left out when the feed is read."""
    import datetime as dt

    user = world.users[0]
    with world.ch.session() as client:
        version = client.query("SELECT max(version) FROM feed_versions").result_rows[0][0]
        top = client.query(
            "SELECT post_id, author_id FROM feed_recommendations WHERE version = {v:UInt64} AND user_id = {u:UUID} "
            "AND rank = 1",
            parameters={"v": version, "u": user},
        ).result_rows[0]
    ts = dt.datetime.now(dt.UTC)
    world.ch.insert(
        "posts", [[top[0], top[1], "x", ts, ts, 99, 1]],
        ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"],
    )  # fmt: skip
    feed = service.get_feed(user, limit=30)
    assert feed.source == "clickhouse"
    assert str(top[0]) not in {p["post_id"] for p in feed.posts}
    assert feed.posts and feed.posts[0]["rank"] == 2  # ranks keep their numbers


def test_get_feeds_batches_misses_into_one_query(service: FeedService, world: World) -> None:
    before = service.clickhouse_queries
    pages = service.get_feeds(world.users, limit=3)
    assert service.clickhouse_queries == before + 1
    assert set(pages) == {str(u) for u in world.users}
    assert all(p.source == "clickhouse" and len(p.posts) == 3 for p in pages.values())


def test_concurrent_misses_share_one_query(service: FeedService, world: World) -> None:
    """Misses arriving while a query runs are answered together by the next one."""
    gate, batches, load = threading.Event(), [], service._loader.load

    def gated(users):  # type: ignore[no-untyped-def]
        batches.append(sorted(str(u) for u in users))
        gate.wait(10)
        return load(users)

    service._loader.load = gated

    async def requests() -> list:  # type: ignore[type-arg]
        first = asyncio.ensure_future(service.feed(world.users[0], limit=2))
        deadline = time.monotonic() + 10
        while not batches and time.monotonic() < deadline:  # the loader holds the first miss at the gate
            await asyncio.sleep(0.01)
        others = [*world.users[1:6], world.users[1], world.cold_user]
        waiting = [asyncio.ensure_future(service.feed(u, limit=2, offset=1)) for u in others]
        await asyncio.sleep(0.3)  # past Redis (empty), they queue behind the held query
        return [first, *waiting]

    async def scenario() -> list:  # type: ignore[type-arg]
        tasks = await requests()
        before.append(service.clickhouse_queries)
        gate.set()
        return await asyncio.gather(*tasks)

    before: list[int] = []
    pages = asyncio.run(scenario())
    before_count = before[0]
    assert batches == [[str(world.users[0])], sorted(str(u) for u in [*world.users[1:6], world.cold_user])]
    assert service.clickhouse_queries == before_count + 2
    assert [p.posts[0]["rank"] for p in pages] == [1] + [2] * 7
    assert [p.source for p in pages] == ["clickhouse"] * 7 + ["trending"]
    assert pages[1].user_id == pages[6].user_id == str(world.users[1])


def test_bad_requests_are_clear(service: FeedService) -> None:
    with pytest.raises(InvalidRequest, match="not a UUID"):
        service.get_feed("42; DROP TABLE events")
    with pytest.raises(InvalidRequest, match="limit=0"):
        service.get_feed(uuid.uuid4(), limit=0)


def test_circuit_breaker_opens_half_opens_and_closes(service: FeedService, world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = service.clickhouse
    service.get_feed(world.cold_user)  # caches trending in Redis through the healthy path
    service.flush()
    service.trending = None  # forgotten: the degraded path must find it in Redis
    service.clickhouse = ClickHouseResource(url="http://default:x@127.0.0.1:1", connect_timeout_s=0.2)
    for user in world.users[:2]:
        assert service.get_feed(user).source == "degraded"
    assert service.breaker.current_state == "open"
    queries = service.clickhouse_queries
    degraded = service.get_feed(world.users[3])
    assert degraded.source == "degraded" and degraded.posts  # trending from the cache
    assert service.clickhouse_queries == queries  # open: ClickHouse is not even tried
    service.clickhouse = good
    time.sleep(1.1)  # reset timeout: the next call is the half-open trial
    assert service.get_feed(world.users[4]).source == "clickhouse"
    assert service.breaker.current_state == "closed"


def test_counters_reach_redis_and_prometheus(service: FeedService, world: World, redis_resource) -> None:  # type: ignore[no-untyped-def]
    user = world.users[1]
    service.get_feed(user)
    for _ in range(3):
        service.get_feed(user)
    time.sleep(0.3)
    stats = {k.decode(): int(v) for k, v in redis_resource.client().hgetall(stats_key()).items()}
    assert stats["misses"] == 1 and stats["hits_l1"] == 3
    assert sum(v for k, v in stats.items() if k.startswith("hit_le_")) == 3


def test_http_endpoints(service: FeedService, world: World, redis_resource) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server, _thread = serve_in_thread(service, port)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/feed/{world.users[2]}?limit=4&offset=1") as resp:
            body = orjson.loads(resp.read())
        assert resp.status == 200 and len(body["posts"]) == 4 and body["posts"][0]["rank"] == 2
        for bad in ("/feed/not-a-uuid", f"/feed/{world.users[2]}?limit=abc", f"/feed/{world.users[2]}?limit=999"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(base + bad)
            assert info.value.code == 400
            assert "error" in orjson.loads(info.value.read())
        with urllib.request.urlopen(f"{base}/metrics") as resp:
            text = resp.read().decode()
        assert "feed_api_latency_ms_bucket" in text
        assert 'cache_misses_total{cache_type="feed"}' in text
        assert 'clickhouse_query_duration_ms_bucket{le="1.0",query_type="feed_ranking"}' in text
        service.flush()
        assert redis_resource.client().exists(feed_key(world.users[2]))
    finally:
        server.shutdown()


def test_redis_down_still_answers_from_clickhouse(world: World) -> None:
    import redis

    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=10))
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no retries with back-off (redis-py's default): the service's close waits for its writes
    dead = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    svc = FeedService(world.ch, dead, stats_flush_s=0.1)
    try:
        page = svc.get_feed(world.users[0], limit=3)
        assert page.source == "clickhouse" and len(page.posts) == 3
        assert svc.get_feed(world.users[0], limit=3).source == "l1"
    finally:
        svc.close()


def test_cache_equals_recommendations_for_warmed_users(world: World, redis_resource) -> None:  # type: ignore[no-untyped-def]
    from nova_assets.core.cache.warming import warm

    with world.ch.session() as client:
        version = recompute(client, ScoringParams(feed_size=10))["version"]
        warm(client, redis_resource.client(), users=8)
    for user in world.users:
        cached = orjson.loads(redis_resource.client().get(feed_key(user)))
        rows = world.ch.query(
            "SELECT rank, toString(post_id), toString(author_id) FROM feed_recommendations "
            "WHERE version = {v:UInt64} AND user_id = {u:UUID} ORDER BY rank",
            parameters={"v": version, "u": user},
        ).result_rows
        assert [(p["rank"], p["post_id"], p["author_id"]) for p in cached["posts"]] == [tuple(r) for r in rows]


def test_unknown_users_share_trending_without_cache_entries(service: FeedService, world: World, redis_resource) -> None:  # type: ignore[no-untyped-def]
    r = redis_resource.client()
    service.get_feed(world.users[0])  # a real feed in L1
    service.flush()
    keys = set(r.keys("feed:*"))
    strangers = [uuid.uuid4() for _ in range(300)]
    pages = service.get_feeds(strangers, limit=2)
    assert {p.source for p in pages.values()} == {"trending"}
    assert all(p.posts_json == pages[str(strangers[0])].posts_json for p in pages.values())
    assert service.get_feed(strangers[0]).source == "l1"  # the negative cache answers a second time
    service.flush()
    assert set(r.keys("feed:*")) - keys <= {b"feed:{trending}"}
    assert len(service.l1.items) == 1 and service.get_feed(world.users[0]).source == "l1"


def _wait_for_owners(service: FeedService, version: int | None = None) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        owners = service.owners
        if owners is not None and (version is None or owners.version == version):
            return
        time.sleep(0.05)
    raise AssertionError(f"the feed owners of version {version} were not loaded")


def test_trending_is_read_once_per_published_version_and_cold_ids_ask_nothing(
    service: FeedService, world: World, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A cold id asks ClickHouse nothing once the version's feed owners are loaded (a lookup of its
    own would find no feed); trending is read once per version."""
    from nova_assets.core.recommendations.scoring import NIL_USER
    from nova_assets.serving import feed as feed_module

    asked: list[list[uuid.UUID]] = []
    real = feed_module.fetch_feeds_json

    def recording(client, version, users):  # type: ignore[no-untyped-def]
        asked.append(list(users))
        return real(client, version, users)

    monkeypatch.setattr(feed_module, "fetch_feeds_json", recording)
    _wait_for_owners(service)
    for _ in range(4):
        assert service.get_feed(uuid.uuid4()).source == "trending"
    first_version = service.trending.version if service.trending else None
    assert asked == [[NIL_USER]] and service.cold_skipped == 4  # the first read loads trending only
    # from then on a cold id is answered from memory: no Redis read, no thread hop
    stranger = str(uuid.uuid4())
    assert service.local(stranger) == (service.trending, "trending") and stranger in service.negative
    assert service.local(stranger) == (service.trending, "l1")  # a hit the second time, as before
    assert service.local(str(world.users[1])) is None  # an owner goes on to Redis and ClickHouse
    assert service.get_feed(world.users[1]).source == "clickhouse"  # an owner is still looked up
    assert asked[-1] == [world.users[1]]
    with world.ch.session() as client:
        version = recompute(client, ScoringParams(feed_size=30))["version"]  # a new version is published
    _wait_for_owners(service, version)
    asked.clear()
    assert service.get_feed(uuid.uuid4()).source == "trending"
    assert service.get_feed(uuid.uuid4()).source == "trending"
    assert asked == [[NIL_USER]]
    assert service.trending is not None and service.trending.version != first_version


def test_a_post_deleted_after_its_feed_was_cached_leaves_its_pages(
    service: FeedService, world: World, redis_resource
) -> None:  # type: ignore[no-untyped-def]
    """The cached feed is kept (no miss for a delete); from the next poll of the deletes on, every
    page leaves the post out, from L1 here and from Redis in another process."""
    import datetime as dt

    reader = world.users[4]
    page = service.get_feed(reader, limit=30)
    assert page.source == "clickhouse"
    service.flush()
    top = page.posts[0]
    ts = dt.datetime.now(dt.UTC)
    world.ch.insert(
        "posts", [[uuid.UUID(top["post_id"]), uuid.UUID(top["author_id"]), "x", ts, ts, 99, 1]],
        ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"],
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while top["post_id"] not in service.deletions.ids and time.monotonic() < deadline:
        time.sleep(0.05)
    after = service.get_feed(reader, limit=30)
    assert after.source == "l1" and top["post_id"] not in {p["post_id"] for p in after.posts}
    assert after.total == page.total - 1 and after.posts[0]["rank"] == 2
    assert redis_resource.client().exists(feed_key(reader))  # kept: the next reads are still hits
    other = FeedService(world.ch, redis_resource.client(), follow_deletions=False)
    try:
        elsewhere = other.get_feed(reader, limit=30)
    finally:
        other.close()
    assert elsewhere.source == "redis" and top["post_id"] not in {p["post_id"] for p in elsewhere.posts}


def test_nova_serve_reads_redis_on_its_loop(world: World, redis_resource: RedisResource, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With an asyncio client bound at start-up, a Redis hit never goes through the Redis thread."""
    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=10))
    svc = FeedService(world.ch, redis_resource.client(), stats_flush_s=0.1, async_redis=redis_resource.async_client)
    threaded: list[object] = []
    real_submit = svc._redis_loader.submit
    monkeypatch.setattr(svc._redis_loader, "submit", lambda users: threaded.append(users) or real_submit(users))
    port = free_port()
    server, _thread = serve_in_thread(svc, port)
    try:
        url = f"http://127.0.0.1:{port}/feed/{world.users[1]}?limit=3"
        with urllib.request.urlopen(url) as resp:
            assert orjson.loads(resp.read())["source"] == "clickhouse"
        svc.flush()
        svc.l1.clear()
        with urllib.request.urlopen(url) as resp:
            body = orjson.loads(resp.read())
        assert body["source"] == "redis" and [p["rank"] for p in body["posts"]] == [1, 2, 3]
        assert threaded == []
        assert svc.get_feed(world.users[1]).source == "l1"  # another loop (asyncio.run): L1 first, as ever
    finally:
        server.shutdown()
        _thread.join(timeout=10)
        svc.close()


@pytest.mark.parametrize("redis_state", ["down", "stalled"])
def test_a_redis_that_fails_or_stalls_is_skipped_and_counted(world: World, redis_state: str) -> None:
    """On the loop too: a Redis that refuses connections or accepts and never answers is skipped once
    `redis_wait_s` has passed, and counted; ClickHouse answers."""
    import socket

    import redis
    import redis.asyncio

    from nova_assets.serving.http import Limits

    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=10))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does) and never answers
    redis_port = free_port() if redis_state == "down" else silent.getsockname()[1]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # the service's own writes and counters give up at once here (its close waits for them)
    sync = redis.Redis(
        host="127.0.0.1", port=redis_port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    svc = FeedService(
        world.ch, sync, stats_flush_s=0.1,
        async_redis=lambda: redis.asyncio.Redis(host="127.0.0.1", port=redis_port, socket_timeout=5),
    )  # fmt: skip
    port = free_port()
    server, thread = serve_in_thread(svc, port, limits=Limits(redis_wait_s=0.1))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/feed/{world.users[0]}?limit=3") as resp:
            assert orjson.loads(resp.read())["source"] == "clickhouse"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
            text = resp.read().decode()
        # a refused connection is retried with back-off (redis-py's default), so it too is past the wait
        assert 'feed_redis_skipped_total{reason="slow"} 1.0' in text
    finally:
        server.shutdown()
        thread.join(timeout=10)
        svc.close()
        silent.close()


def test_a_value_in_redis_that_does_not_decode_is_skipped(service: FeedService, world: World, redis_resource) -> None:  # type: ignore[no-untyped-def]
    """As before the Redis tier moved: ClickHouse answers, and the skip is counted as an error."""
    redis_resource.client().set(feed_key(world.users[3]), b"not json", ex=60)
    assert service.get_feed(world.users[3]).source == "clickhouse"
    assert service.metrics.redis_skipped.labels("error")._value.get() == 1


def test_a_feed_late_in_l1_is_served_and_refreshed_from_redis_behind_the_answer(
    world: World, redis_resource: RedisResource
) -> None:
    """Refresh-ahead: past `l1_refresh_s` a hit is still answered from L1, at once, and the feed is
    re-read from Redis behind it (a warm wrote a newer version there); before, L1 answers alone."""
    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=10))
    r = redis_resource.client()
    svc = FeedService(world.ch, r, l1_refresh_s=1.0, stats_flush_s=0.1)
    try:
        user = str(world.users[6])
        first = svc.get_feed(user)
        svc.flush()
        newer = orjson.loads(r.get(feed_key(user)))  # as the next warm would write it
        newer["version"] += 1
        r.set(feed_key(user), orjson.dumps(newer), ex=300)
        time.sleep(0.3)
        assert svc.get_feed(user).version == first.version and not svc.refreshing  # young: L1 alone
        time.sleep(0.9)
        late = svc.get_feed(user)
        assert (late.source, late.version) == ("l1", first.version)  # answered, not held for Redis
        deadline = time.monotonic() + 5
        while svc.get_feed(user).version != first.version + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        page = svc.get_feed(user)
        assert (page.source, page.version) == ("l1", first.version + 1) and not svc.refreshing
        assert page.posts_json == first.posts_json
    finally:
        svc.close()
