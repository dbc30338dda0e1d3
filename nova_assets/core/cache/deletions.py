"""The posts deleted since the feeds a reader holds were computed, so a read can leave them out.

A cached feed (Redis, L1) is the ranked list of one version; a post deleted after that version
was computed is still in it. Dropping every feed that shows the post (UNLINK its readers) turned
thousands of hits into ClickHouse misses per delete: at half the guide's load 10,094 feeds a
rung, the most of the misses `nova bench platform` saw. Instead each reader polls the deletes that
CDC loaded (`post_deletions`, ordered by arrival: a poll reads a few rows) about once a second
and leaves them out of every page it serves. A delete stays out of every page from the poll after
it is loaded, and no cached feed is thrown away for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from nova_assets.core.recommendations.scoring import query_text

RECENT = query_text("recent_post_deletions")
#: how long a delete is remembered: longer than any cached feed lives (Redis 5 min, the trending
#: fallback 1 h), so every feed that may still show the post is filtered
HORIZON_S = 3600.0
#: a poll reads again this far before the newest delete it knows: a delete's arrival time is taken
#: when its insert starts, and an insert becomes visible when it ends
OVERLAP_MS = 10_000
PRUNE_EVERY_S = 60.0


class Deletions:
    """Post ids deleted in the last `horizon_s`, refreshed by `refresh`; safe to read from any thread.

    A poll adds only the rows it has not seen, in place (a membership test in another thread is
    safe against that under the GIL): rebuilding the whole map every second held the GIL for
    milliseconds at tens of thousands of deletes, a stall in `nova serve`'s event loop. Deletes
    past the horizon are dropped once a minute.
    """

    def __init__(self, horizon_s: float = HORIZON_S) -> None:
        self.horizon_ms = int(horizon_s * 1000)
        self.ids: dict[str, int] = {}  # post id -> arrival (epoch ms)
        self.newest_ms: int | None = None
        self.refreshed_at: float | None = None  # time.monotonic() of the last successful poll
        self._pruned_at = time.monotonic()
        self._lock = threading.Lock()  # one poll at a time

    def refresh(self, client: Client, now_ms: int | None = None) -> int:
        """Read the deletes loaded since the last poll; returns how many are new."""
        with self._lock:
            now_ms = int(time.time() * 1000) if now_ms is None else now_ms
            floor = now_ms - self.horizon_ms
            since = floor if self.newest_ms is None else max(floor, self.newest_ms - OVERLAP_MS)
            rows = client.query(RECENT, parameters={"since": since}).result_rows
            ids, added = self.ids, 0
            for post, at in rows:
                if post not in ids:
                    added += 1
                ids[post] = at
                if self.newest_ms is None or at > self.newest_ms:
                    self.newest_ms = at
            if self.newest_ms is None:
                self.newest_ms = floor  # nothing deleted yet: next time read from here
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                for post in [p for p, at in ids.items() if at < floor]:
                    del ids[post]
                self._pruned_at = time.monotonic()
            self.refreshed_at = time.monotonic()
            return added

    def visible(self, posts: tuple[bytes, ...], post_ids: Sequence[str]) -> tuple[bytes, ...]:
        """`posts` without the deleted ones (`post_ids` is their ids, in the same order)."""
        deleted = self.ids
        if not deleted or not post_ids:
            return posts
        if not any(p in deleted for p in post_ids):
            return posts
        return tuple(post for post, pid in zip(posts, post_ids, strict=True) if pid not in deleted)
