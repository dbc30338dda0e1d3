"""A small social graph with known engagement, shared by the recommendation, cache and serving tests."""

from __future__ import annotations

import datetime as dt
import uuid

from nova_assets.resources import ClickHouseResource

EVENT_COLUMNS = ["event_id", "event_time", "user_id", "post_id", "author_id", "action", "dwell_ms", "device", "app_ver"]


class World:
    """A small social graph with known engagement, written straight into ClickHouse."""

    def __init__(self, ch: ClickHouseResource) -> None:
        self.ch = ch
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.users = [uuid.UUID(int=i + 1) for i in range(8)]
        self.authors = [uuid.UUID(int=100 + i) for i in range(6)]
        # each author has 5 posts
        self.posts = {a: [uuid.UUID(int=1000 + 10 * j + i) for i in range(5)] for j, a in enumerate(self.authors)}
        self.cold_user = uuid.UUID(int=999_999)

    def event(self, user: uuid.UUID, author: uuid.UUID, post: uuid.UUID, action: str, hours_ago: float) -> list:
        when = self.now - dt.timedelta(hours=hours_ago)
        return [uuid.uuid4(), when, user, post, author, action, 5000, "ios", "1"]

    def populate(self) -> None:
        rows = []
        for j, author in enumerate(self.authors):
            for i, post in enumerate(self.posts[author]):
                for user in self.users:
                    rows.append(self.event(user, author, post, "view", 2 + i))
                # author 0 is the hottest, author 5 the coldest
                for _ in range(max(1, 6 - j) * (5 - i)):
                    rows.append(self.event(self.users[(i + j) % 8], author, post, "like", 2 + i))
        # user 0 loves author 3
        for _ in range(20):
            rows.append(self.event(self.users[0], self.authors[3], self.posts[self.authors[3]][0], "share", 30))
        self.ch.insert("events", rows, EVENT_COLUMNS)
        ts = self.now - dt.timedelta(days=1)
        follow_cols = ["follower_id", "followee_id", "created_at", "version"]
        self.ch.insert("follows", [[self.users[1], self.authors[5], ts, 1]], follow_cols)
        post_cols = ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"]
        deleted = self.posts[self.authors[0]][0]
        self.ch.insert(
            "posts",
            [[deleted, self.authors[0], "x", ts, ts, 1, 0], [deleted, self.authors[0], "x", ts, ts, 2, 1]],
            post_cols,
        )
        self.deleted_post = deleted
