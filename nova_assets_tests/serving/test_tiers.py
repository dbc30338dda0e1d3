"""`Cached.from_raw`: a feed as ClickHouse wrote it is cut, not re-encoded; any other shape is parsed."""

from __future__ import annotations

import uuid

import orjson

from nova_assets.core.cache.warming import feed_value
from nova_assets.serving.tiers import Cached


def _post(rank: int, reason: str = "hot") -> bytes:
    """One post exactly as sql/queries/feed_posts.sql builds it."""
    return b'{"rank":%d,"post_id":"%s","author_id":"%s","score":%s,"reason":%s}' % (
        rank, str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode(), b"0.123456", orjson.dumps(reason),
    )  # fmt: skip


def test_clickhouse_posts_are_kept_byte_for_byte() -> None:
    posts = [_post(i) for i in range(1, 101)]
    cached = Cached.from_raw(feed_value(uuid.uuid4(), 7, b"[" + b",".join(posts) + b"]", "personal"))
    assert cached.version == 7 and cached.posts == tuple(posts)
    assert cached.post_ids == tuple(orjson.loads(p)["post_id"] for p in posts)


def test_other_shapes_are_parsed_in_full() -> None:
    tricky = [_post(1, 'a "},{" b'), _post(2)]  # the separator inside a string
    reordered = orjson.dumps([{"post_id": str(uuid.uuid4()), "rank": 1}])
    for array in (b"[" + b",".join(tricky) + b"]", reordered):
        cached = Cached.from_raw(feed_value("u", 3, array, "personal"))
        parsed = orjson.loads(array)
        assert [orjson.loads(p) for p in cached.posts] == parsed
        assert cached.post_ids == tuple(p["post_id"] for p in parsed) and cached.version == 3


def test_an_empty_feed() -> None:
    assert Cached.from_raw(feed_value("trending", 2, b"[]", "trending")) == Cached(2, (), ())
