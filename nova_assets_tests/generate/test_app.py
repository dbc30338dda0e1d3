"""The app generator draws the world's engagement ahead instead of once per transaction."""

from __future__ import annotations

import time

import numpy as np

from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.generate.app import DRAW_AHEAD, DRAW_FRESH_S, AppWriter


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
