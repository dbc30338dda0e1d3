"""The app generator draws the world's engagement ahead instead of once per transaction."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.generate.app import DRAW_AHEAD, DRAW_FRESH_S, AppWriter
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
    parts = [writer._engagement(5, now) for _ in range(DRAW_AHEAD // 5)]
    assert world.draws == 1
    drawn = writer._drawn
    users = np.concatenate([p["user"] for p in parts])
    assert users.tolist() == drawn["user"][: len(users)].tolist()  # in order, none served twice
    assert all(len(p["slot"]) == 5 for p in parts)


def test_a_used_up_or_stale_draw_is_drawn_again() -> None:
    world = CountingWorld(WorldConfig(seed=3, users=300))
    writer = AppWriter(world)
    now = time.time()
    for _ in range(DRAW_AHEAD // 5 + 1):  # one transaction more than a draw holds
        writer._engagement(5, now)
    assert world.draws == 2
    writer._engagement(5, now + DRAW_FRESH_S)  # a second of world time later: tastes drift
    assert world.draws == 3
    big = writer._engagement(DRAW_AHEAD + 10, now + DRAW_FRESH_S)  # more than a draw: drawn whole
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
        assert added == [sum(c.get("like", 0) for c in counts), sum(c.get("follow", 0) for c in counts)], counts
