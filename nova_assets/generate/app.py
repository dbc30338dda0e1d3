"""`nova generate app`: the demo world's writes to the Nova app's Postgres tables, for CDC demos and benchmarks.

The users, their follows and the posts are the world's (`world.py`), so the app's data agrees
with the events `nova generate events` sends: on start every world user and follow is written
and the posts of the world's window are back-filled; then posts appear on the world clock, and
likes and comments come from the world's engagement sampler (fans like what they follow), new
follows go to authors of the user's topics, plus profile edits and post deletes, several changes
per transaction like an app under load.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import numpy as np
import psycopg

from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.resources.postgres import PostgresResource

MIX = (("like", 0.5), ("comment", 0.2), ("follow", 0.12), ("edit", 0.15), ("delete", 0.03))
# the share of changes that delete a post: at the demo's 20 changes/s, 0.0002 deletes ~14 posts an
# hour of the 180 published (a delete drops every cached feed that shows the post: an app that
# deleted more posts than it published would keep the feed cache empty)
DELETE_SHARE = 0.0002
LIKE = "INSERT INTO likes (user_id, post_id) SELECT %s, %s WHERE EXISTS (SELECT 1 FROM posts WHERE id = %s) " \
    "ON CONFLICT DO NOTHING"  # fmt: skip
COMMENT = "INSERT INTO comments (id, post_id, user_id, body) SELECT %s, %s, %s, %s " \
    "WHERE EXISTS (SELECT 1 FROM posts WHERE id = %s)"  # fmt: skip
# the world's engagement is drawn this many at a time: a draw costs ~0.5 ms however small, and a
# transaction holds 5 changes; a draw serves until used up or a second of world time has passed
DRAW_AHEAD = 256
DRAW_FRESH_S = 1.0


# what parallel writers run into, and a real app retries
WRITE_CONFLICTS = (
    psycopg.errors.ForeignKeyViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
STATEMENTS = {
    "like": LIKE,
    "comment": COMMENT,
    "follow": "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
    "edit": "UPDATE users SET bio = %s, updated_at = now() WHERE id = %s",
    "delete": "DELETE FROM posts WHERE id = %s",
}


class AppWriter:
    """Writes one world's app data; remembers what it published and deleted (posts in Postgres)."""

    def __init__(self, world: World, delete_share: float = DELETE_SHARE) -> None:
        self.world = world
        rest = sum(p for kind, p in MIX if kind != "delete")
        self.mix_p = [p / rest * (1 - delete_share) if kind != "delete" else delete_share for kind, p in MIX]
        self.rng = np.random.default_rng([world.config.seed, 2, world.stream])
        self.published_until = 0.0  # world-clock seconds up to which posts are written
        self.live: list[int] = []  # post numbers published by this writer and not deleted
        self._drawn: dict[str, np.ndarray] = {}
        self._drawn_at = -float("inf")
        self._next = 0

    def _engagement(self, n: int, now_s: float) -> dict[str, np.ndarray]:
        """The next n of the world's engagement at about `now_s`, from a draw made ahead."""
        size = len(self._drawn.get("user", ()))
        if self._next + n > size or now_s - self._drawn_at >= DRAW_FRESH_S:
            self._drawn = self.world.sample(max(DRAW_AHEAD, n), now_s)
            self._drawn_at, self._next = now_s, 0
        part = {key: column[self._next : self._next + n] for key, column in self._drawn.items()}
        self._next += n
        return part

    def uid(self, i: int) -> uuid.UUID:
        return uuid.UUID(self.world.user_id(i))

    def pid(self, slot: int) -> uuid.UUID:
        return uuid.UUID(self.world.post_id(slot))

    def seed(self, conn: psycopg.Connection, now_s: float) -> dict[str, int]:
        """Every world user and follow, and the posts of the world's window (idempotent)."""
        w = self.world
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, username) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(self.uid(i), f"user_{w.config.seed}_{i}") for i in range(w.config.users)],
            )
            since = dt.datetime.fromtimestamp(now_s - w.config.window_hours * 3600, dt.UTC)
            cur.executemany(
                "INSERT INTO follows (follower_id, followee_id, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.uid(a), self.uid(b), since) for a, b in w.follow_pairs.tolist()],
            )
        conn.commit()
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
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO posts (id, author_id, body, created_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )
        conn.commit()
        self.live.extend(slots.tolist())
        window_start = (now_s - self.world.config.window_hours * 3600) * self.world.config.post_rate
        if self.live and self.live[0] < window_start:
            self.live = [s for s in self.live if s >= window_start]
        return len(rows)

    def changes(self, cur: psycopg.Cursor, n: int, now_s: float) -> dict[str, int]:
        """n statements of the mix, likes and comments from the world's engagement at `now_s`; one
        pipelined executemany per kind (a transaction of many costs one round trip). Returns the
        rows each kind changed (a post's delete counts once; its likes and comments go by cascade)."""
        kinds = self.rng.choice(len(MIX), size=n, p=self.mix_p)
        sample = self._engagement(n, now_s)
        rows: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind, _ in MIX}
        for i, k in enumerate(kinds.tolist()):
            kind = MIX[k][0]
            user, slot = int(sample["user"][i]), int(sample["slot"][i])
            if kind == "like":
                post = self.pid(slot)
                rows[kind].append((self.uid(user), post, post))
            elif kind == "comment":
                post = self.pid(slot)
                rows[kind].append((uuid.uuid4(), post, self.uid(user), "nice", post))
            elif kind == "follow":
                # the author of a post the user engages with: follows grow along the user's tastes
                author = int(sample["author"][i])
                if author != user:
                    rows[kind].append((self.uid(user), self.uid(author)))
            elif kind == "edit":
                rows[kind].append((f"bio {self.rng.random():.6f}", self.uid(user)))
            elif self.live:  # delete a post (its likes and comments go with it, by cascade)
                rows[kind].append((self.pid(self.live.pop(int(self.rng.integers(len(self.live))))),))
        written: dict[str, int] = {}
        for kind, sql in STATEMENTS.items():
            if rows[kind]:
                cur.executemany(sql, rows[kind])
                # rows changed, not statements: a like of a post already liked (or gone) changes
                # nothing, and in a world written for minutes that was up to half of the likes
                written[kind] = max(0, cur.rowcount)
        return written


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
    with postgres.connect() as conn:
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
                time.sleep(min(wait, duration_s - elapsed))
                continue
            try:
                with conn.cursor() as cur:
                    written = writer.changes(cur, per_txn, time.time())
                conn.commit()
            except WRITE_CONFLICTS:
                # parallel writers: another deleted the post between our check and our insert, or
                # a delete's cascade deadlocked with our likes; the app would retry, the generator
                # drops the transaction and counts it
                conn.rollback()
                counts["rolled_back_txns"] = counts.get("rolled_back_txns", 0) + 1
                written = {}
            for kind, k in written.items():
                counts[kind] = counts.get(kind, 0) + k
            done += sum(written.values())  # paced by rows changed: `rate` is what CDC carries
    counts["changes"] = sum(v for k, v in counts.items() if not k.startswith(("seed_", "rolled_back")))
    return counts
