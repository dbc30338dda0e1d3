"""`nova generate app`: the demo world's writes to the Nova app's Postgres tables, for CDC demos and benchmarks.

The users, their follows and the posts are the world's (`world.py`), so the app's data agrees
with the events `nova generate events` sends: on start every world user and follow is written
and the posts of the world's window are back-filled; then posts appear on the world clock, and
likes and comments come from the world's engagement sampler (fans like what they follow; a like
of a post already liked is an unlike, as in the app), new follows go to authors of the user's
topics, plus profile edits and post deletes, several changes per transaction like an app under
load, each transaction one set-based statement (`sql/queries/app_transaction.sql`).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import numpy as np
import psycopg

from nova_assets.core.recommendations.scoring import query_text
from nova_assets.core.world.ahead import DrawAhead
from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.resources.postgres import PostgresResource

MIX = (("like", 0.5), ("comment", 0.2), ("follow", 0.12), ("edit", 0.15), ("delete", 0.03))
# the share of changes that delete a post: at the demo's 20 changes/s, 0.0002 deletes ~14 posts an
# hour of the 180 published (a delete drops every cached feed that shows the post: an app that
# deleted more posts than it published would keep the feed cache empty)
DELETE_SHARE = 0.0002
# the world's engagement is drawn this many at a time (`DrawAhead`): a transaction holds 5 changes
DRAW_AHEAD = 256
TICK_S = 0.05


# what parallel writers run into, and a real app retries
WRITE_CONFLICTS = (
    psycopg.errors.ForeignKeyViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
# one app transaction, every kind at once (sql/queries/app_transaction.sql)
TRANSACTION = query_text("app_transaction")
KINDS = ("like", "unlike", "comment", "follow", "edit", "delete")  # the columns it returns
PARAMS = (
    "like_users", "like_posts", "comment_ids", "comment_posts", "comment_users", "comment_bodies",
    "followers", "followees", "edit_users", "edit_bios", "deleted_posts",
)  # fmt: skip


def run_transaction(conn: psycopg.Connection, params: dict[str, list[Any]]) -> dict[str, int]:
    """One app transaction (`TRANSACTION`, every key of PARAMS a list, empty for none of a kind);
    returns the rows each kind changed, kinds that changed none left out."""
    row = conn.execute(TRANSACTION, params).fetchone()
    # rows changed, not statements: a like of a post gone (or a follow already there) changes nothing
    return {kind: int(k) for kind, k in zip(KINDS, row or (), strict=True) if k}


class AppWriter:
    """Writes one world's app data; remembers what it published and deleted (posts in Postgres)."""

    def __init__(self, world: World, delete_share: float = DELETE_SHARE) -> None:
        self.world = world
        rest = sum(p for kind, p in MIX if kind != "delete")
        self.mix_p = [p / rest * (1 - delete_share) if kind != "delete" else delete_share for kind, p in MIX]
        self.rng = np.random.default_rng([world.config.seed, 2, world.stream])
        self.published_until = 0.0  # world-clock seconds up to which posts are written
        self.live: list[int] = []  # post numbers published by this writer and not deleted
        self.engagement = DrawAhead(world, DRAW_AHEAD)

    def uid(self, i: int) -> uuid.UUID:
        return uuid.UUID(self.world.user_id(i))

    def pid(self, slot: int) -> uuid.UUID:
        return uuid.UUID(self.world.post_id(slot))

    def seed(self, conn: psycopg.Connection, now_s: float) -> dict[str, int]:
        """Every world user and follow, and the posts of the world's window (idempotent)."""
        w = self.world
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, username) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(self.uid(i), f"user_{w.config.seed}_{i}") for i in range(w.config.users)],
            )
            since = dt.datetime.fromtimestamp(now_s - w.config.window_hours * 3600, dt.UTC)
            cur.executemany(
                "INSERT INTO follows (follower_id, followee_id, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.uid(a), self.uid(b), since) for a, b in w.follow_pairs.tolist()],
            )
        self.published_until = now_s - w.config.window_hours * 3600
        posts = self.publish(conn, now_s)
        return {"seed_users": w.config.users, "seed_follows": len(w.follow_pairs), "seed_posts": posts}

    def publish(self, conn: psycopg.Connection, now_s: float) -> int:
        """The world's posts published since the last call (on the world clock)."""
        slots = self.world.post_slots(self.published_until, now_s)
        self.published_until = now_s
        if not len(slots):
            return 0
        authors = self.world.post_author(slots)
        rows = [
            (self.pid(s), self.uid(a), f"post {s}", dt.datetime.fromtimestamp(s / self.world.config.post_rate, dt.UTC))
            for s, a in zip(slots.tolist(), authors.tolist(), strict=True)
        ]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO posts (id, author_id, body, created_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )
        self.live.extend(slots.tolist())
        window_start = (now_s - self.world.config.window_hours * 3600) * self.world.config.post_rate
        if self.live and self.live[0] < window_start:
            self.live = [s for s in self.live if s >= window_start]
        return len(rows)

    def changes(self, conn: psycopg.Connection, n: int, now_s: float) -> dict[str, int]:
        """One app transaction of n changes of the mix, likes and comments from the world's
        engagement at `now_s`, as one set-based statement (one round trip: `run_transaction`)."""
        kinds = self.rng.choice(len(MIX), size=n, p=self.mix_p)
        sample = self.engagement.take(n, now_s)
        params: dict[str, list[Any]] = {key: [] for key in PARAMS}
        world = self.world
        for i, k in enumerate(kinds.tolist()):
            kind = MIX[k][0]
            user, slot = int(sample["user"][i]), int(sample["slot"][i])
            if kind == "like":
                params["like_users"].append(world.user_id(user))
                params["like_posts"].append(world.post_id(slot))
            elif kind == "comment":
                params["comment_ids"].append(str(uuid.uuid4()))
                params["comment_posts"].append(world.post_id(slot))
                params["comment_users"].append(world.user_id(user))
                params["comment_bodies"].append("nice")
            elif kind == "follow":
                # the author of a post the user engages with: follows grow along the user's tastes
                author = int(sample["author"][i])
                if author != user:
                    params["followers"].append(world.user_id(user))
                    params["followees"].append(world.user_id(author))
            elif kind == "edit":
                params["edit_users"].append(world.user_id(user))
                params["edit_bios"].append(f"bio {self.rng.random():.6f}")
            elif self.live:  # delete a post (its likes and comments go with it, by cascade)
                params["deleted_posts"].append(world.post_id(self.live.pop(int(self.rng.integers(len(self.live))))))
        return run_transaction(conn, params)


def generate(
    postgres: PostgresResource,
    rate: float,
    duration_s: float,
    users: int | None = None,
    per_txn: int = 5,
    seed: int = WorldConfig.seed,
    writer_index: int = 0,
    seed_world: bool = True,
    delete_share: float = DELETE_SHARE,
) -> dict[str, Any]:
    """Write about `rate` changes per second for `duration_s` (plus the world's posts); returns counts by kind.

    Parallel writers (benchmarks) share one world: writer 0 seeds it and publishes the posts, the
    others (`seed_world=False`, their own `writer_index`) write changes from their own random stream.
    """
    from nova_assets.core.cdc.runner import apply_source_schema

    if seed_world:
        apply_source_schema(postgres)
    config = WorldConfig(seed=seed, **({"users": users} if users else {}))
    writer = AppWriter(World(config, stream=writer_index), delete_share=delete_share)
    counts: dict[str, Any] = {}
    with postgres.connect(autocommit=True) as conn:  # a change transaction is one statement
        now = time.time()
        if seed_world:
            counts.update(writer.seed(conn, now))
        else:  # the seeding writer published the window's posts already
            writer.published_until = now
            writer.live = writer.world.post_slots(now - config.window_hours * 3600, now).tolist()
        start = time.monotonic()
        done = 0
        while (elapsed := time.monotonic() - start) < duration_s:
            if writer_index == 0:
                posted = writer.publish(conn, time.time())
                counts["post"] = counts.get("post", 0) + posted
            # sleep until the next transaction is due (polling every 2 ms cost more than the writes)
            wait = (done + per_txn) / rate - elapsed if rate > 0 else 0.0
            if wait > 0:
                time.sleep(min(max(wait, TICK_S), duration_s - elapsed))
                continue
            try:
                written = writer.changes(conn, per_txn, time.time())
            except WRITE_CONFLICTS:
                # parallel writers: another deleted the post between our check and our insert, or
                # a delete's cascade deadlocked with our likes; the app would retry, the generator
                # drops the transaction (rolled back: one statement) and counts it
                counts["rolled_back_txns"] = counts.get("rolled_back_txns", 0) + 1
                written = {}
            for kind, k in written.items():
                counts[kind] = counts.get(kind, 0) + k
            done += sum(written.values())  # paced by rows changed: `rate` is what CDC carries
    counts["changes"] = sum(v for k, v in counts.items() if not k.startswith(("seed_", "rolled_back")))
    return counts
