"""`FeedService.feeds`: the guide's multi-tier cache, with a circuit breaker around ClickHouse.

L1 is a small in-process LRU with a TTL (5 min) and an idle timeout (1 min) for ~10k users, as
the guide's moka cache (hand-written: cachetools has no idle expiry); a feed read after 4 min in
L1 is served and re-read from Redis behind the answer (refresh-ahead, as Caffeine's
`refreshAfterWrite`), so an active user's reads do not wait on Redis when the TTL ends. L2 is
Redis, one key per user holding the whole ranked feed. A miss in both reads `feed_recommendations`
(bound array parameter), and users without a feed get the global trending list. Concurrent
misses are coalesced: one loader thread takes every miss waiting at that moment into one query.
pybreaker opens after 5 ClickHouse failures in a row, half-opens after 30 s, and closes on the
next success; while it is open the read path serves trending from the caches.

Users without a personal feed (cold or unknown ids) share the one trending entry, found without
a lookup once the version's owners are loaded (`core.cache.owners`); their ids go to a bounded
negative cache, never to Redis or L1, so random ids cannot grow Redis or evict real feeds. A
post deleted after a cached feed was computed is left out of every page read from then on: a
thread polls the deletes CDC loaded about once a second (`core.cache.deletions`). Counters go to
Prometheus and, every second, to per-minute Redis hashes for the SLO checks (`metrics.ReadCounts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import cast

import pybreaker
import redis
import redis.asyncio.cluster
from clickhouse_connect.driver.client import Client

from nova_assets.core.cache.deletions import Deletions
from nova_assets.core.cache.keys import feed_key, trending_key
from nova_assets.core.cache.owners import FeedOwners
from nova_assets.core.cache.warming import feed_value, fetch_feeds_json, set_many
from nova_assets.core.ports import AsyncRedisClient, RedisClient
from nova_assets.core.recommendations.scoring import NIL_USER, latest_version
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.serving.metrics import FeedMetrics, ReadCounts
from nova_assets.serving.pages import check_page, parse_user_id
from nova_assets.serving.tiers import Cached, Coalescer, FeedPage, Loaded, TtlMap

MISS_TIMEOUT_S = 60.0  # a caller never waits forever on the loader
NEGATIVE_CAPACITY = 50_000  # ids known to have no personal feed (bounded: random ids recycle it)
NEGATIVE_TTL_S = 300.0  # as long as a Redis entry lives: a new user's first feed shows within 5 min
DELETIONS_EVERY_S = 1.0  # how often the deletes CDC loaded are polled (one small query)


class FeedService:
    """The read path; thread-safe, one per process."""

    def __init__(
        self,
        clickhouse: ClickHouseResource,
        cache: RedisClient,
        *,
        l1_capacity: int = 10_000,
        l1_ttl_s: float = 300,
        l1_idle_s: float = 60,
        l1_refresh_s: float | None = 240,
        redis_ttl_s: int = 300,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30,
        stats_flush_s: float = 1.0,
        version_ttl_s: float = 1.0,
        negative_capacity: int = NEGATIVE_CAPACITY,
        negative_ttl_s: float = NEGATIVE_TTL_S,
        follow_deletions: bool = True,
        async_redis: Callable[[], AsyncRedisClient] | None = None,
    ) -> None:
        self.clickhouse = clickhouse
        self.cache = cache
        self.redis_ttl_s = redis_ttl_s
        self.l1: TtlMap[Cached] = TtlMap(l1_capacity, l1_ttl_s, l1_idle_s)
        self.l1_refresh_s, self.refreshing = l1_refresh_s, set[str]()  # users being re-read from Redis
        self.negative: TtlMap[bool] = TtlMap(negative_capacity, negative_ttl_s)  # ids without a feed
        self.trending: Cached | None = None  # what every user without a personal feed is shown
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker_fail_max, reset_timeout=breaker_reset_s, name="clickhouse"
        )
        self.metrics = FeedMetrics()
        self.metrics.entries.labels("l1").set_function(lambda: len(self.l1.items))
        self.metrics.entries.labels("negative").set_function(lambda: len(self.negative.items))
        self.clickhouse_queries = 0
        self.deletions = Deletions()
        self.owners: FeedOwners | None = None  # who has a feed in the published version
        self.cold_skipped = 0  # ids answered with trending without a ClickHouse lookup
        self.metrics.entries.labels("feed_owners").set_function(lambda: len(self.owners.ids) if self.owners else 0)
        self._deletions_tried = False
        self.metrics.entries.labels("deleted_posts").set_function(lambda: len(self.deletions.ids))
        # the published version changes every few minutes: asking ClickHouse once a second is
        # enough, and saves a round trip on every miss
        self._version_ttl_s = version_ttl_s
        self._version: tuple[float, int] | None = None
        self.counts = ReadCounts(self.metrics, cache, stats_flush_s)
        self._stop = threading.Event()
        self._writes: queue.Queue[list[tuple[bytes, bytes, int]] | None] = queue.Queue(maxsize=256)
        self._writer = threading.Thread(target=self._write_loop, name="feed-redis-writer", daemon=True)
        self._writer.start()
        self._redis_loader = Coalescer(self._from_redis, "feed-redis-loader")
        self._async_factory = async_redis
        self._async: tuple[asyncio.AbstractEventLoop, AsyncRedisClient] | None = None
        self._loader = Coalescer(self._from_clickhouse, "feed-miss-loader")
        self._follower: threading.Thread | None = None
        if follow_deletions:  # else (a one-shot read) the deletes are read once, before the first page
            self._follower = threading.Thread(target=self._follow_deletions, name="feed-deletions", daemon=True)
            self._follower.start()

    # --- public -------------------------------------------------------------------------------

    async def feeds(
        self,
        user_ids: list[str | uuid.UUID],
        limit: int = 20,
        offset: int = 0,
        redis_wait_s: float | None = None,
    ) -> dict[str, FeedPage]:
        """The read path, the one chain `nova serve`, `nova feed` and the tests use: this process's
        memory (L1, or trending for a known cold id) on the caller's loop, then one Redis read (on
        the loop once `bind_loop` ran, else coalesced on the Redis thread; skipped when slower than
        `redis_wait_s`: ClickHouse answers), then one coalesced ClickHouse query. Nothing here
        blocks the loop."""
        check_page(limit, offset)
        started = time.perf_counter()
        users = [parse_user_id(str(u)) for u in user_ids]
        if self._follower is None and not self._deletions_tried:  # a one-shot read: the deletes once
            self._deletions_tried = True
            await asyncio.to_thread(self._refresh_deletions)
        found: dict[str, Loaded] = {}
        for user in users:
            local = self.local(str(user))
            if local is not None:
                found[str(user)] = local
        pending = list(dict.fromkeys(u for u in users if str(u) not in found))
        if pending:
            for user, cached in zip(pending, await self._redis_tier(pending, redis_wait_s), strict=True):
                if cached is not None:
                    found[str(user)] = cached
        missing = [u for u in pending if str(u) not in found]
        if missing:
            loads = [asyncio.wrap_future(f) for f in self._loader.submit(missing)]
            for user, loaded in zip(
                missing, await asyncio.wait_for(asyncio.gather(*loads), MISS_TIMEOUT_S), strict=True
            ):
                if loaded is None:  # a bug, not a miss: fail the request rather than hang it
                    raise LookupError(f"the feed loader returned nothing for {user}")
                found[str(user)] = loaded
        return {str(u): self.page(str(u), *found[str(u)], limit, offset, started, len(users)) for u in users}

    async def feed(
        self, user_id: str | uuid.UUID, limit: int = 20, offset: int = 0, redis_wait_s: float | None = None
    ) -> FeedPage:
        """One user's page (see `feeds`)."""
        pages = await self.feeds([user_id], limit, offset, redis_wait_s)
        return pages[str(parse_user_id(str(user_id)))]

    def get_feed(self, user_id: str | uuid.UUID, limit: int = 20, offset: int = 0) -> FeedPage:
        """`feed` for callers without an event loop (`nova feed`, scripts)."""
        return asyncio.run(self.feed(user_id, limit, offset))

    def get_feeds(self, user_ids: list[str | uuid.UUID], limit: int = 20, offset: int = 0) -> dict[str, FeedPage]:
        """`feeds` for callers without an event loop."""
        return asyncio.run(self.feeds(user_ids, limit, offset))

    async def bind_loop(self) -> None:
        """Read Redis on the running loop from now on (`nova serve` calls this at start-up).

        A Redis hit then costs the loop one wake-up instead of three thread hand-offs (the Redis
        thread, its reply, the loop), each of which waits for a core when the machine is busy.
        Without an `async_redis` factory, or on any other loop, the Redis thread stays the tier.
        """
        if self._async_factory is not None and self._async is None:
            self._async = (asyncio.get_running_loop(), self._async_factory())

    async def unbind_loop(self) -> None:
        """Close the loop's Redis client (on that loop, before it stops)."""
        bound, self._async = self._async, None
        if bound is not None:
            await bound[1].aclose()

    def local(self, user: str) -> Loaded | None:
        """The user's feed from this process's memory (L1, or trending for a cold id: one in the
        negative cache, or not among the published version's owners); never blocks."""
        found = self.l1.get_aged(user)
        if found is not None:
            if self.l1_refresh_s is not None and found[1] > self.l1_refresh_s and user not in self.refreshing:
                self.refreshing.add(user)  # re-read behind this answer, once at a time
                self._redis_loader.submit([uuid.UUID(user)])[0].add_done_callback(
                    lambda _: self.refreshing.discard(user)
                )
            return found[0], "l1"
        trending = self.trending
        if trending is None:
            return None
        if user in self.negative:
            return trending, "l1"
        owners = self.owners
        if owners is not None and owners.version == trending.version and not owners.has_id(user):
            # no personal feed in the published version: trending, known without Redis or a
            # thread hop (a cold id cost the miss path two hops and a Redis round trip); a miss the
            # first time, as before, and from the negative cache after that
            self.cold_skipped += 1
            self.negative.put(user, True)
            return trending, "trending"
        return None

    def page(
        self, user: str, value: Cached, source: str, limit: int, offset: int, started: float, share: int = 1
    ) -> FeedPage:
        """The requested slice without posts deleted since the feed was computed, counted with its
        share of the request's latency."""
        self.counts.count(source, (time.perf_counter() - started) * 1000 / max(1, share))
        posts = self.deletions.visible(value.posts, value.post_ids)
        return FeedPage(user, source, value.version, len(posts), posts[offset : offset + limit])

    def prime(self) -> None:
        """Open ClickHouse, read the recent deletes and load trending before the first request."""
        self._refresh_deletions()
        self._from_clickhouse([])

    def close(self) -> None:
        self._loader.close()
        self._redis_loader.close()
        with contextlib.suppress(queue.Full):
            self._writes.put(None, timeout=5)
        self._writer.join(timeout=5)
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        self.counts.close()

    # --- tiers --------------------------------------------------------------------------------

    async def _redis_tier(self, users: list[uuid.UUID], wait_s: float | None) -> list[Loaded | None]:
        """One Redis round trip for users that missed L1, on this loop when it is bound, else on
        the Redis thread. Slower than `wait_s` or failing: nothing found (ClickHouse answers),
        and the skip is counted."""
        bound = self._async
        try:
            if bound is not None and bound[0] is asyncio.get_running_loop():
                return await asyncio.wait_for(self._from_redis_async(bound[1], users), wait_s)
            lookups = [asyncio.wrap_future(f) for f in self._redis_loader.submit(users)]
            return list(await asyncio.wait_for(asyncio.gather(*lookups), wait_s))
        except TimeoutError:
            self.metrics.redis_skipped.labels("slow").inc(len(users))
        except Exception:  # a failing Redis, or a value it holds that does not decode
            self.metrics.redis_skipped.labels("error").inc(len(users))
        return [None] * len(users)

    async def _from_redis_async(self, client: AsyncRedisClient, users: list[uuid.UUID]) -> list[Loaded | None]:
        keys = [feed_key(u) for u in users]
        if len(keys) == 1:
            raws = [await client.get(keys[0])]
        elif isinstance(client, redis.asyncio.cluster.RedisCluster):
            raws = await client.mget_nonatomic(keys)  # keys of several slots
        else:
            raws = await client.mget(keys)
        return [self._remember(user, cast("bytes | None", raw)) for user, raw in zip(users, raws, strict=True)]

    def _from_redis(self, users: list[uuid.UUID]) -> dict[str, Loaded]:
        """The Redis thread's batch (see `_redis_tier`)."""
        found: dict[str, Loaded] = {}
        for user, raw in zip(users, self._redis_mget([feed_key(u) for u in users]), strict=True):
            loaded = self._remember(user, raw)
            if loaded is not None:
                found[str(user)] = loaded
        return found

    def _remember(self, user: uuid.UUID, raw: bytes | None) -> Loaded | None:
        """A feed read from Redis, decoded and kept in L1."""
        if raw is None:
            return None
        value = Cached.from_raw(raw)
        self.l1.put(str(user), value)
        return value, "redis"

    def _redis_mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            if len(keys) == 1:
                return [cast("bytes | None", self.cache.get(keys[0]))]  # no decode_responses: bytes
            pipe = self.cache.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return pipe.execute()
        except redis.RedisError:
            self.metrics.redis_skipped.labels("error").inc(len(keys))
            return [None] * len(keys)

    def _published(self, client: Client) -> int | None:
        """The newest published version, read at most once per `version_ttl_s`."""
        now = time.monotonic()
        if self._version is not None and now - self._version[0] < self._version_ttl_s:
            return self._version[1]
        version = latest_version(client)
        self._version = (now, version) if version is not None else None
        return version

    def _query(self, users: list[uuid.UUID]) -> tuple[int, dict[uuid.UUID, bytes]]:
        """Feeds (posts as JSON built by ClickHouse) of the users, in one query; trending too when
        this process does not hold the published version's list yet (it changes with the version
        only: fetching it with every miss added ~10% to a cold read's server CPU at 200 trending posts)."""
        self.clickhouse_queries += 1
        started = time.perf_counter()
        with self.clickhouse.session() as client:
            version = self._published(client)
            if version is None:
                return 0, {}
            owners = self.owners
            if owners is not None and owners.version == version:  # the others have no feed: trending
                asked = [u for u in users if owners.has(u)]
                self.cold_skipped += len(users) - len(asked)
                users = asked
            stale = self.trending is None or self.trending.version != version
            wanted = [*users, NIL_USER] if stale else users
            if not wanted:
                return version, {}
            feeds = fetch_feeds_json(client, version, wanted)
        self.metrics.clickhouse.labels("feed_ranking").observe((time.perf_counter() - started) * 1000)
        return version, feeds

    def _from_clickhouse(self, users: list[uuid.UUID]) -> dict[str, Loaded]:
        try:
            version, feeds = self.breaker.call(self._query, users)
        except Exception as exc:  # breaker open or ClickHouse failing: serve trending from the caches
            return self._degraded(users, exc)
        out: dict[str, Loaded] = {}
        writes: list[tuple[bytes, bytes, int]] = []
        if NIL_USER in feeds or self.trending is None:  # keep the fallback list fresh for when ClickHouse is away
            raw_trending = feed_value("trending", version, feeds.get(NIL_USER, b"[]"), "trending")
            self.trending = Cached.from_raw(raw_trending)  # decoded once, shared by every cold user
            writes.append((trending_key().encode(), raw_trending, self.redis_ttl_s * 12))
        for user in users:
            posts = feeds.get(user)
            if not posts:  # no personal feed: the shared trending entry, and no per-user cache entry
                self.negative.put(str(user), True)
                out[str(user)] = (self.trending, "trending")
                continue
            raw = feed_value(user, version, posts, "personal")
            value = Cached.from_raw(raw)
            self.l1.put(str(user), value)
            writes.append((feed_key(user).encode(), raw, self.redis_ttl_s))
            out[str(user)] = (value, "clickhouse")
        if writes:
            try:  # written behind the answer: a slow Redis never delays a page
                self._writes.put_nowait(writes)
            except queue.Full:
                self.metrics.fallbacks.labels("writeback_dropped").inc()
        return out

    def _write_loop(self) -> None:
        while (writes := self._writes.get()) is not None:
            try:
                set_many(self.cache, writes)
            except redis.RedisError:  # the next read of these users retries
                pass
            finally:
                self._writes.task_done()

    def flush(self) -> None:
        """Wait until feeds loaded from ClickHouse are written back to Redis."""
        self._writes.join()

    def _degraded(self, users: list[uuid.UUID], exc: Exception) -> dict[str, Loaded]:
        trending = self.trending
        if trending is None:
            raw = self._redis_mget([trending_key()])[0]
            trending = Cached.from_raw(raw) if raw else Cached(0, ())
            if raw:
                self.trending = trending
        reason = "breaker_open" if isinstance(exc, pybreaker.CircuitBreakerError) else "clickhouse_error"
        self.metrics.fallbacks.labels(reason).inc(len(users))
        return {str(u): (trending, "degraded") for u in users}

    def _refresh_deletions(self) -> None:
        try:
            with self.clickhouse.session() as client:
                self.deletions.refresh(client)
        except Exception:  # ClickHouse away: pages keep the deletes known so far; the next poll retries
            self.metrics.fallbacks.labels("deletions_unread").inc()

    def _refresh_owners(self) -> None:
        try:
            with self.clickhouse.session() as client:
                version = self._published(client)
                if version is not None and (self.owners is None or self.owners.version != version):
                    self.owners = FeedOwners.load(client, version)
        except Exception:  # until it loads, every miss asks ClickHouse
            self.metrics.fallbacks.labels("owners_unread").inc()

    def _follow_deletions(self) -> None:
        """About once a second: the deletes CDC loaded, and who has a feed in a new version."""
        while not self._stop.is_set():
            self._refresh_deletions()
            self._refresh_owners()
            self._stop.wait(DELETIONS_EVERY_S)
