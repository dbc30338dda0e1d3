"""`nova generate app`: realistic writes to the Nova app's Postgres tables, for CDC demos and benchmarks.

A mix of new users, posts, likes, comments, follows, profile edits and deletes at a steady rate,
several changes per transaction like an app under load.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from nova_assets.resources.postgres import PostgresResource

MIX = (("post", 0.25), ("like", 0.35), ("comment", 0.15), ("follow", 0.12), ("edit", 0.08), ("delete", 0.05))


@dataclass
class AppState:
    users: list[uuid.UUID] = field(default_factory=list)
    posts: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (post, author)
    rng: random.Random = field(default_factory=lambda: random.Random(5))


def seed(conn: psycopg.Connection, state: AppState, users: int) -> None:
    with conn.cursor() as cur:
        rows = [(uuid.uuid4(), f"user_{i}_{uuid.uuid4().hex[:6]}") for i in range(users)]
        cur.executemany("INSERT INTO users (id, username) VALUES (%s, %s)", rows)
        state.users.extend(r[0] for r in rows)
    conn.commit()


def one_change(cur: psycopg.Cursor, state: AppState) -> str:
    rng = state.rng
    kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    user = rng.choice(state.users)
    if kind in ("like", "comment", "delete") and not state.posts:
        kind = "post"
    if kind == "post":
        post = uuid.uuid4()
        cur.execute("INSERT INTO posts (id, author_id, body) VALUES (%s, %s, %s)", (post, user, f"post {post.hex[:8]}"))
        state.posts.append((post, user))
    elif kind == "like":
        post, _ = rng.choice(state.posts)
        cur.execute("INSERT INTO likes (user_id, post_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (user, post))
    elif kind == "comment":
        post, _ = rng.choice(state.posts)
        cur.execute(
            "INSERT INTO comments (id, post_id, user_id, body) VALUES (%s, %s, %s, %s)",
            (uuid.uuid4(), post, user, "nice"),
        )
    elif kind == "follow":
        other = rng.choice(state.users)
        if other != user:
            cur.execute(
                "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (user, other)
            )
    elif kind == "edit":
        cur.execute("UPDATE users SET bio = %s, updated_at = now() WHERE id = %s", (f"bio {rng.random():.6f}", user))
    else:  # delete a post (its likes and comments go with it, by cascade)
        post, _ = state.posts.pop(rng.randrange(len(state.posts)))
        cur.execute("DELETE FROM posts WHERE id = %s", (post,))
    return kind


def generate(
    postgres: PostgresResource, rate: float, duration_s: float, users: int = 500, per_txn: int = 5
) -> dict[str, int]:
    """Write about `rate` changes per second for `duration_s`; returns counts by kind."""
    from nova_assets.defs.cdc.runner import apply_source_schema

    apply_source_schema(postgres)
    state = AppState()
    counts: dict[str, int] = {}
    with postgres.connect() as conn:
        seed(conn, state, users)
        counts["seed_users"] = users
        start = time.monotonic()
        done = 0
        while (elapsed := time.monotonic() - start) < duration_s:
            due = int(rate * elapsed)
            if due - done < per_txn:
                time.sleep(0.002)
                continue
            with conn.cursor() as cur:
                for _ in range(per_txn):
                    kind = one_change(cur, state)
                    counts[kind] = counts.get(kind, 0) + 1
            conn.commit()
            done += per_txn
    counts["changes"] = sum(v for k, v in counts.items() if k != "seed_users")
    return counts
