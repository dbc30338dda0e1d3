"""The deletes a reader leaves out: read from post_deletions incrementally, pruned past the horizon."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from nova_assets.core.cache import deletions
from nova_assets.core.cache.deletions import Deletions
from nova_assets.resources import ClickHouseResource


def _delete(ch: ClickHouseResource, post: uuid.UUID, at: dt.datetime) -> None:
    """A delete as CDC loads it: a row of the posts mirror with is_deleted = 1 (the MV files it)."""
    ch.insert(
        "posts", [[post, uuid.uuid4(), "x", at, at, 9, 1, at]],
        ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted", "ingested_at"],
    )  # fmt: skip


def test_polls_add_only_new_deletes_and_old_ones_expire(clickhouse: ClickHouseResource, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    old, recent, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _delete(clickhouse, old, now - dt.timedelta(hours=2))  # before the horizon: never read
    _delete(clickhouse, recent, now - dt.timedelta(minutes=5))
    seen = Deletions(horizon_s=3600)
    with clickhouse.session() as client:
        assert seen.refresh(client) == 1 and set(seen.ids) == {str(recent)}
        assert seen.refresh(client) == 0  # the overlap re-reads it: nothing new
        _delete(clickhouse, later, dt.datetime.now(dt.UTC))
        assert seen.refresh(client) == 1 and set(seen.ids) == {str(recent), str(later)}
        # an hour later (the horizon moved past `recent`), the minute's prune drops it
        monkeypatch.setattr(deletions, "PRUNE_EVERY_S", 0.0)
        seen.refresh(client, now_ms=int((time.time() + 3600 - 60) * 1000))
    assert set(seen.ids) == {str(later)}
    posts = (b'{"post_id":"a"}', b'{"post_id":"b"}')
    assert seen.visible(posts, [str(later), "b"]) == (posts[1],)
    assert seen.visible(posts, ["a", "b"]) is posts  # nothing deleted: the same tuple, no copy
    assert seen.visible(posts, ()) is posts  # a value without ids (degraded trending) is served whole
