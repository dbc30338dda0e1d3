"""The app generator draws the world's engagement ahead instead of once per transaction."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from nova_assets.core.world.ahead import FRESH_S
from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.generate.app import DRAW_AHEAD, PARAMS, AppWriter, run_transaction
from nova_assets.resources import PostgresResource
from nova_assets.stack import Stack


class CountingWorld(World):
    """The demo world, counting its draws (a draw costs ~0.5 ms however small)."""

    draws = 0

    def sample(self, n: int, now_s: float) -> dict[str, np.ndarray]:
        self.draws += 1
        return super().sample(n, now_s)


def test_one_draw_serves_many_transactions_in_order() -> None:
    world = CountingWorld(WorldConfig(seed=3, users=300))
    writer = AppWriter(world)
    now = time.time()
    parts = [writer.engagement.take(5, now) for _ in range(DRAW_AHEAD // 5)]
    assert world.draws == 1
    drawn = writer.engagement.drawn
    users = np.concatenate([p["user"] for p in parts])
    assert users.tolist() == drawn["user"][: len(users)].tolist()  # in order, none served twice
    assert all(len(p["slot"]) == 5 for p in parts)


def test_a_used_up_or_stale_draw_is_drawn_again() -> None:
    world = CountingWorld(WorldConfig(seed=3, users=300))
    writer = AppWriter(world)
    now = time.time()
    for _ in range(DRAW_AHEAD // 5 + 1):  # one transaction more than a draw holds
        writer.engagement.take(5, now)
    assert world.draws == 2
    writer.engagement.take(5, now + FRESH_S)  # a second of world time later: tastes drift
    assert world.draws == 3
    big = writer.engagement.take(DRAW_AHEAD + 10, now + FRESH_S)  # more than a draw: drawn whole
    assert len(big["user"]) == DRAW_AHEAD + 10


@pytest.mark.integration
def test_parallel_writers_each_write_their_own_changes(stack: Stack) -> None:
    """`nova generate app --writer K`: writers share the seeded world and write different changes at
    once, each on its own connection (one writer waits on every commit, so a high rate needs several)."""
    env = {**os.environ, **stack.env()}
    nova = str(Path(sys.executable).parent / "nova")
    world = ("--users", "50", "--seed", "7")
    subprocess.run([nova, "generate", "app", "--rate", "0", "--duration", "0", *world], env=env, check=True)
    postgres = PostgresResource(dsn=env["NOVA_POSTGRES_DSN"])

    def rows() -> tuple[int, int]:
        with postgres.connect() as conn:
            return conn.execute("SELECT (SELECT count(*) FROM likes), (SELECT count(*) FROM follows)").fetchone()

    before = rows()
    writers = [
        subprocess.Popen(
            [nova, "generate", "app", "--rate", "100", "--duration", "2", "--changes-only", "--writer", str(k), *world],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    counts = [ast.literal_eval(w.communicate(timeout=120)[0].strip().splitlines()[-1]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert all(c["changes"] >= 100 for c in counts), counts  # ~200 each: both wrote, side by side
    assert "seed_users" not in counts[1] and counts[1].get("post", 0) == 0, counts[1]  # writer 0 publishes posts
    # the counts are rows changed, not statements sent: a like of a post already liked is none
    if not any("delete" in c for c in counts):  # a post's delete takes its likes with it
        added = [after - b for after, b in zip(rows(), before, strict=True)]
        likes = sum(c.get("like", 0) - c.get("unlike", 0) for c in counts)  # a repeat like is an unlike
        assert added == [likes, sum(c.get("follow", 0) for c in counts)], counts


@pytest.mark.integration
def test_a_transaction_is_one_statement_and_a_repeat_like_is_an_unlike(stack: Stack) -> None:
    """Every kind in one set-based statement, counted by the rows it changed: a like twice is a like
    then an unlike, a like of a post gone and a follow already there change nothing."""
    env = {**os.environ, **stack.env()}
    nova = str(Path(sys.executable).parent / "nova")
    # the post is one the seed wrote: a slot before the seed began (a slot that opened while it ran
    # may not be in Postgres, and a like of it changes nothing)
    now = time.time()
    subprocess.run([nova, "generate", "app", "--rate", "0", "--duration", "0", "--users", "50", "--seed", "11"],
                   env=env, check=True)  # fmt: skip
    world = World(WorldConfig(seed=11, users=50))
    slot = int(world.post_slots(now - 3600, now)[-1])
    user, post = world.user_id(1), world.post_id(slot)
    follower, followee = (world.user_id(int(i)) for i in world.follow_pairs[0])
    gone = world.post_id(10**12)  # a post that never was

    def params(**kinds: list[str]) -> dict[str, list[str]]:
        return {key: kinds.get(key, []) for key in PARAMS}

    with PostgresResource(dsn=env["NOVA_POSTGRES_DSN"]).connect(autocommit=True) as conn:
        conn.execute("DELETE FROM likes WHERE user_id = %s AND post_id = %s", (user, post))
        both = params(
            like_users=[user, user], like_posts=[post, gone],
            comment_ids=[str(uuid.uuid4())], comment_posts=[post], comment_users=[user], comment_bodies=["hi"],
            followers=[follower], followees=[followee],
            edit_users=[world.user_id(2), world.user_id(3)], edit_bios=["a", "b"],
        )  # fmt: skip
        assert run_transaction(conn, both) == {"like": 1, "comment": 1, "edit": 2}
        assert run_transaction(conn, params(like_users=[user], like_posts=[post])) == {"unlike": 1}
        liked = conn.execute("SELECT count(*) FROM likes WHERE user_id = %s AND post_id = %s", (user, post)).fetchone()
        assert liked == (0,)
        assert run_transaction(conn, params(like_users=[user], like_posts=[post])) == {"like": 1}
